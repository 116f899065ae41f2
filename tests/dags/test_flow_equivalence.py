"""One flow declaration, two executors: `dag.test()` and the in-process runner make the same
step calls in the same order and leave the same records in the store."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from mlops_tasks.data import synthetic
from mlops_tasks.flow.flows import RETRAIN
from mlops_tasks.records import Trigger
from mlops_tasks.registry import Registry
from mlops_tasks.specs import load_spec
from mlops_tasks.storage import LocalStore
from tests.dags.conftest import REPO, SPEC_DIR
from tests.flowkit import retrain

#: Fields that name the run or the moment, not what the run did.
VOLATILE = {"run_id", "report_uri", "uri", "created_at", "at", "started_at", "seconds"}


@pytest.fixture(scope="module")
def dagbag(airflow_db):
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(REPO / "dags"))


def stable(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: stable(v) for k, v in value.items() if k not in VOLATILE}
    if isinstance(value, list):
        return [stable(v) for v in value]
    return value


def step_records(store: LocalStore, model: str) -> list[dict[str, Any]]:
    """Every step record the run left, in the order the steps started."""
    (run_dir,) = store.list_dirs(f"runs/{model}")
    records = [store.get_json(k) for k in store.list_keys(f"runs/{model}/{run_dir}/")]
    return sorted(records, key=lambda r: r["started_at"])


def write_data(root: Path) -> LocalStore:
    store = LocalStore(root)
    synthetic.write_batches(days=6, rows_per_day=800, store=store)
    return store


def test_dag_test_and_in_process_runs_agree(dagbag, tmp_path: Path, monkeypatch) -> None:
    from threadpoolctl import threadpool_limits

    airflow_store = write_data(tmp_path / "airflow")
    local_store = write_data(tmp_path / "local")
    monkeypatch.setenv("MLOPS_STORE", airflow_store.uri)
    spec = load_spec(SPEC_DIR / "credit_default.yaml")
    with threadpool_limits(1):
        run = dagbag.dags["credit_default_retrain"].test(run_conf={"reason": "same flow"})
        local = retrain(spec, local_store, Trigger("manual", user="pytest", reason="same flow"))
    assert "success" in str(run.state).lower() and local.status == "success"

    via_airflow = step_records(airflow_store, spec.name)
    in_process = step_records(local_store, spec.name)
    expected = [s.name for s in RETRAIN.for_spec(spec)]
    assert [r["step"] for r in via_airflow] == [r["step"] for r in in_process] == expected
    for a, b in zip(via_airflow, in_process, strict=True):
        assert a["status"] == b["status"] == "success"
        assert stable(a["output"]) == stable(b["output"]), a["step"]

    a, b = Registry(airflow_store), Registry(local_store)
    va, vb = a.get_version(spec.name, 1), b.get_version(spec.name, 1)
    for field in ("dataset", "metrics", "spec_hash", "params", "seed", "status"):
        assert getattr(va, field) == getattr(vb, field), field
    assert va.triggered_by.kind == vb.triggered_by.kind == "manual"
    assert va.triggered_by.reason == vb.triggered_by.reason == "same flow"
    assert [e["action"] for e in a.audit(spec.name)] == [e["action"] for e in b.audit(spec.name)]
