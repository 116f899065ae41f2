"""What the scheduler and Celery workers import before they fork tasks
(mlops_tasks.flow.preload)."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

from mlops_tasks.flow import preload

REPO = Path(__file__).resolve().parents[2]


def _local_settings():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location(
        "mlops_local_settings_under_test", REPO / "plugins" / "airflow_local_settings.py"
    )
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(
    ("argv", "executor", "forks"),
    [
        (["airflow", "scheduler"], "LocalExecutor", True),
        (["airflow", "scheduler", "--skip-serve-logs"], "LocalExecutor", True),
        (["airflow", "scheduler"], "CeleryExecutor,LocalExecutor", True),
        (["airflow", "scheduler"], "CeleryExecutor", False),  # Celery's workers fork the tasks
        (["/venv/bin/airflow", "celery", "worker", "--concurrency", "2"], "CeleryExecutor", True),
        (["airflow", "api-server"], "LocalExecutor", False),
        (["airflow", "dag-processor"], "LocalExecutor", False),
        (["airflow", "triggerer"], "LocalExecutor", False),
        (["airflow", "celery", "flower"], "CeleryExecutor", False),
        (["airflow", "dags", "list"], "LocalExecutor", False),
        (["airflow"], "LocalExecutor", False),
        (["python", "-m", "pytest"], "LocalExecutor", False),
    ],
)
def test_only_the_processes_tasks_fork_from_preload(
    argv: list[str], executor: str, forks: bool
) -> None:
    assert _local_settings()._forks_tasks(argv, executor) is forks


def test_preload_imports_the_libraries_and_nothing_heavy_or_of_this_package() -> None:
    code = (
        "import sys; from mlops_tasks.flow.preload import preload, MODULES; took = preload(); "
        "assert set(took) == set(MODULES), set(MODULES) - set(took); "
        "bad = [m for m in sys.modules if m.split('.')[0] in "
        "('airflow', 'great_expectations', 'evidently')]; assert not bad, bad[:5]; "
        "own = sorted(m for m in sys.modules if m.startswith('mlops_tasks.') "
        "and m not in ('mlops_tasks.flow', 'mlops_tasks.flow.preload')); "  # its package
        "assert not own, own"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], check=False, capture_output=True, text=True, cwd=REPO
    )
    assert out.returncode == 0, out.stderr[-2000:]


def test_a_module_that_fails_to_import_is_skipped_not_raised() -> None:
    took = preload.preload(("json", "mlops_tasks_no_such_module"))
    assert set(took) == {"json"}
