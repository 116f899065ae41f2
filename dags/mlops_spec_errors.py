"""Airflow import errors for broken model specs; this DAG file declares no DAG that runs.

Airflow's dag-processor marks every DAG of a file that has an import error as stale, so the
spec errors cannot be raised where the models' DAGs are built (`mlops_dags.py` skips a broken
spec). This file raises them instead: Browse -> DAG Import Errors names each broken spec file,
its fields and what they should be, while every other model stays scheduled. Fixing the spec
clears the error at this file's next parse.
"""

from __future__ import annotations

from mlops_airflow import invalid_spec_dag

from mlops_tasks.settings import Settings
from mlops_tasks.specs import load_specs

_, _ERRORS = load_specs(Settings.from_env().spec_dir)
if _ERRORS:
    mlops_invalid_specs = invalid_spec_dag([str(err) for err in _ERRORS])
