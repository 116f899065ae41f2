"""Airflow import errors for broken model specs and deployment settings; this DAG file
declares no DAG that runs.

Airflow's dag-processor marks every DAG of a file that has an import error as stale, so these
errors cannot be raised where the models' DAGs are built (`mlops_dags.py` skips a broken spec
and reads no setting but the spec folder and the pool). This file raises them instead:
Browse -> DAG Import Errors names each broken spec file, its fields and what they should be,
and a deployment setting the tasks will refuse (`MLOPS_SIGNING_KEY`, `MLOPS_SERVING_API_TOKEN`,
...), while every model stays scheduled. Fixing it clears the error at this file's next parse.
"""

from __future__ import annotations

from mlops_airflow import invalid_spec_dag

from mlops_tasks.errors import MlopsError
from mlops_tasks.settings import ParseSettings, Settings
from mlops_tasks.specs import load_specs


def _problems() -> list[str]:
    _, errors = load_specs(ParseSettings.from_env().spec_dir)
    problems = [str(err) for err in errors]
    try:
        Settings.from_env()
    except MlopsError as err:
        problems.append(f"deployment settings (the environment): {err}")
    return problems


if _PROBLEMS := _problems():
    mlops_invalid_specs = invalid_spec_dag(_PROBLEMS)
