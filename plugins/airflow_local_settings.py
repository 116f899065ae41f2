"""Airflow's local settings for this platform: imported by every Airflow process at start-up.

The processes that tasks are forked from import the libraries the flow steps use before they
fork, so that no task pays for them again (`mlops_tasks.flow.preload`): the scheduler when it runs
the LocalExecutor (whose workers fork each task), and `airflow celery worker` (whose pool
does). The API server, DAG processor, triggerer and a scheduler that hands tasks to Celery do
not. `MLOPS_PRELOAD=0` turns it off.

Airflow finds this file because it puts the plugins folder on `sys.path`; a deployment with its
own `airflow_local_settings.py` (in `$AIRFLOW_HOME/config`, which comes first) should call
`mlops_tasks.flow.preload.preload()` from it the same way.
"""

from __future__ import annotations

import os
import sys


def _forks_tasks(argv: list[str], executor: str) -> bool:
    """Whether this `airflow ...` command starts a process that tasks are forked from."""
    args = [a for a in argv[1:3] if not a.startswith("-")]
    if args[:1] == ["scheduler"]:
        return "LocalExecutor" in executor
    return args == ["celery", "worker"]


def _executor() -> str:
    try:
        from airflow.configuration import conf

        return str(conf.get("core", "executor"))
    except Exception:  # cannot tell: preloading is harmless, only memory
        return "LocalExecutor"


if os.environ.get("MLOPS_PRELOAD", "1") != "0" and _forks_tasks(sys.argv, _executor()):
    from mlops_tasks.flow.preload import preload

    # Airflow configures its logging after this file: one plain line in the process's log.
    _took = preload()
    print(
        f"mlops: preloaded {len(_took)} modules in {sum(_took.values()):.2f} s for the tasks "
        "this process forks (MLOPS_PRELOAD=0 turns it off)",
        file=sys.stderr,
    )
