"""dag.test() runs of the generated DAGs: pass, gate failure, drift request, bad Params."""

from __future__ import annotations

from pathlib import Path

import pytest

from mlops_tasks.data import synthetic
from mlops_tasks.monitor import policy
from mlops_tasks.registry import Registry
from mlops_tasks.storage import LocalStore
from tests.dags.conftest import REPO


@pytest.fixture(scope="module")
def dagbag(airflow_db):
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(REPO / "dags"))


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> LocalStore:
    st = LocalStore(tmp_path / "store")
    monkeypatch.setenv("MLOPS_STORE", st.uri)
    synthetic.write_batches(days=8, rows_per_day=1000, store=st)
    return st


def states(dag_run) -> dict[str, str]:
    return {
        ti.task_id: str(getattr(ti.state, "value", ti.state)) for ti in dag_run.get_task_instances()
    }


def test_retrain_then_monitor_requests_retrain_on_drift(dagbag, store: LocalStore) -> None:
    run = dagbag.dags["credit_default_retrain"].test(run_conf={"reason": "first model"})
    assert str(run.state) in ("success", "DagRunState.SUCCESS"), states(run)
    assert set(states(run).values()) == {"success"}
    reg = Registry(store)
    assert reg.alias("credit_default") == 1
    meta = reg.get_version("credit_default", 1)
    assert meta.triggered_by.kind == "manual"
    assert meta.triggered_by.reason == "first model"
    assert meta.run_id == meta.triggered_by.run_id == run.run_id
    assert meta.evaluation and meta.evaluation["decision"]["note"].startswith("first model")

    monitor = dagbag.dags["credit_default_monitor"]
    quiet = monitor.test()
    assert states(quiet)["request_retrain"] == "skipped"  # stable data: nothing to do

    synthetic.write_batches(
        start=synthetic.date.today(),
        days=2,
        rows_per_day=1000,
        scenario="covariate_shift",
        store=store,
    )
    drifted = monitor.test()
    assert states(drifted)["request_retrain"] == "success", states(drifted)
    from airflow.models.asset import AssetEvent
    from airflow.utils.session import create_session

    with create_session() as session:
        event = session.query(AssetEvent).filter(AssetEvent.source_run_id == drifted.run_id).one()
        extra = dict(event.extra)
    assert extra["report_uri"].endswith("/drift.html")
    assert extra["monitor_run_id"] == drifted.run_id
    assert "income" in extra["drifted_columns"]
    assert (store.root / extra["report_uri"].removeprefix(store.uri + "/")).is_file()
    checks = [c["decision"] for c in policy.history(store, "credit_default")]
    assert checks == ["no_retrain", "retrain"]


def test_gate_failure_fails_the_run_and_rejects_the_candidate(dagbag, store) -> None:
    run = dagbag.dags["strict_credit_retrain"].test()
    st = states(run)
    assert "failed" in str(run.state).lower()
    assert st["gate"] == "failed"
    assert st["deploy"] == "upstream_failed"
    reg = Registry(store)
    assert reg.get_version("strict_credit", 1).status == "rejected"
    assert reg.alias("strict_credit") is None
    (reject,) = reg.audit("strict_credit", action="reject")
    assert "roc_auc" in reject["reason"] and "0.99" in reject["reason"]


def test_invalid_params_are_refused_before_anything_runs(dagbag, store) -> None:
    from airflow.sdk.exceptions import ParamValidationError

    with pytest.raises(ParamValidationError, match="hp_max_iter"):
        dagbag.dags["credit_default_retrain"].test(run_conf={"hp_max_iter": 0})
    assert Registry(store).models() == []


def test_unknown_conf_keys_fail_before_any_work(dagbag, store) -> None:
    run = dagbag.dags["credit_default_retrain"].test(run_conf={"hp_max_itr": 50})
    st = states(run)
    assert st["snapshot_data"] == "failed"
    assert st["validate_data"] == "upstream_failed"
    assert not store.exists("datasets") and Registry(store).models() == []
