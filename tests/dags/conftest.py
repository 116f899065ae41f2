"""An isolated Airflow home for DAG tests: SQLite metadata, the repo's dags/ and plugins/.

Airflow reads its configuration when first imported, so the environment is set here, before
any test module imports it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
AIRFLOW_HOME = Path(tempfile.mkdtemp(prefix="mlops-airflow-"))
SPEC_DIR = AIRFLOW_HOME / "specs"

AIRFLOW_ENV = {
    "AIRFLOW_HOME": str(AIRFLOW_HOME),
    "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
    "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO / "plugins"),
    "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
    "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
    "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{AIRFLOW_HOME}/airflow.db",
    "MLOPS_SPEC_DIR": str(SPEC_DIR),
}
os.environ.update(AIRFLOW_ENV)
sys.path.insert(0, str(REPO / "plugins"))


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    shutil.rmtree(AIRFLOW_HOME, ignore_errors=True)


#: The DAG files: the models' DAGs, and the import error of broken specs in a file of its own.
DAG_FILES = ("mlops_dags.py", "mlops_spec_errors.py")


def dag_folder(root: Path) -> tuple[Path, Path]:
    """A DAG folder with the repository's DAG files and an empty `specs/` beside them."""
    dags, specs = root / "dags", root / "dags" / "specs"
    specs.mkdir(parents=True)
    for name in DAG_FILES:
        shutil.copy(REPO / "dags" / name, dags)
    return dags, specs


def write_specs(directory: Path) -> None:
    """The shipped specs, plus `strict_credit`: the same model with an unreachable gate."""
    directory.mkdir(parents=True, exist_ok=True)
    for spec in (REPO / "dags" / "specs").glob("*.yaml"):
        shutil.copy(spec, directory / spec.name)
    # Tests check drift seconds after a promotion: no cooldown for the test copy.
    credit = (directory / "credit_default.yaml").read_text()
    (directory / "credit_default.yaml").write_text(
        credit.replace("cooldown_hours: 0.25", "cooldown_hours: 0")
    )
    strict = (REPO / "dags/specs/credit_default.yaml").read_text()
    strict = strict.replace("name: credit_default", "name: strict_credit")
    strict = strict.replace("min: {roc_auc: 0.70, pr_auc: 0.40}", "min: {roc_auc: 0.99}")
    assert "roc_auc: 0.99" in strict
    (directory / "strict_credit.yaml").write_text(strict)


write_specs(SPEC_DIR)


@pytest.fixture(scope="session")
def airflow_db() -> Iterator[Path]:
    """`airflow db migrate` once per session (dag.test() needs the metadata tables)."""
    out = subprocess.run(
        [str(Path(sys.executable).parent / "airflow"), "db", "migrate"],
        env={**os.environ, **AIRFLOW_ENV},
        capture_output=True,
        text=True,
        check=False,
    )
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    yield AIRFLOW_HOME
