"""Import once what the flow steps import, in a process that Airflow forks tasks from.

Airflow 3 runs every task in a fresh process: the LocalExecutor's workers are forked from the
scheduler, the Celery pool's from `airflow celery worker`, and each task is forked again from
its worker (`supervise`). A module imported before those forks is already in every task's
memory; one imported by the task itself is paid again by every task. pandas, scikit-learn and
skops cost a model-handling task seconds (docs/benchmarks.md, "Task overhead"), four times per
retrain, while the chain in one process pays them once.

`preload()` imports them ahead of time. It is an optimisation only: a module that fails to
import is logged and skipped, and nothing here opens the store or starts a thread.
`airflow_local_settings.py` (in `plugins/`) calls it in the scheduler and the Celery worker.
"""

from __future__ import annotations

import importlib
import logging
import time

log = logging.getLogger(__name__)

#: The libraries the steps import on their way (data, training, evaluation, drift, registry),
#: but not Great Expectations, which only details a failed batch, nor Evidently, which only
#: draws a page. Never this package's own modules: a scheduler that outlives a code change
#: would hand every task the old code.
MODULES = (
    "numpy",
    "pandas",
    "pyarrow",
    "pyarrow.parquet",
    "scipy.stats",
    "sklearn.compose",
    "sklearn.ensemble",
    "sklearn.impute",
    "sklearn.inspection",
    "sklearn.linear_model",
    "sklearn.metrics",
    "sklearn.pipeline",
    "sklearn.preprocessing",
    "skops.io",
    "threadpoolctl",
)


def preload(modules: tuple[str, ...] = MODULES) -> dict[str, float]:
    """Import `modules`; returns the seconds each took (0 for one already imported)."""
    took: dict[str, float] = {}
    for name in modules:
        t0 = time.perf_counter()
        try:
            importlib.import_module(name)
        except Exception as err:  # an optimisation: the task imports (and reports) it itself
            log.warning("preload: could not import %s (%s: %s)", name, type(err).__name__, err)
            continue
        took[name] = time.perf_counter() - t0
    return took
