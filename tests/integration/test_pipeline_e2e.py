"""The whole loop in plain Python (no Airflow): retrain, monitor, drift-triggered retrain, and the
guards that keep production safe (data validation, the gate, the cooldown).

One module-scoped run trains and promotes v1 on stable demo data; each test then works on its own
copy of that store, so the tests are independent and the expensive first model is built once.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from mlops_tasks import pipeline, policy, synthetic
from mlops_tasks.datasets import load_snapshot
from mlops_tasks.errors import DataValidationError, GateFailed, RegistryError
from mlops_tasks.evaluation import enforce_gate, evaluate_candidate
from mlops_tasks.registry import Registry
from mlops_tasks.specs import ModelSpec, load_spec
from mlops_tasks.storage import ArtifactStore, LocalStore, S3Store
from mlops_tasks.training import train_candidate

SPEC_DIR = Path(__file__).resolve().parents[2] / "dags" / "specs"
START = date(2026, 3, 1)
STABLE_DAYS, ROWS_PER_DAY = 6, 1500
#: Columns whose distribution the covariate_shift scenario moves.
SHIFTED = {
    "age", "income", "credit_limit", "balance", "utilization", "num_late_payments_12m",
    "months_since_last_delinquency", "debt_to_income", "num_credit_inquiries_6m",
    "avg_monthly_spend", "payment_to_income", "credit_score", "region", "channel",
}  # fmt: skip


@pytest.fixture(scope="module", autouse=True)
def one_openmp_thread() -> Iterator[None]:
    """HistGradientBoosting's OpenMP threads busy-wait when the two cores are shared with other
    work (measured: 4x slower); its models do not depend on the thread count, so use one."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1, user_api="openmp"):
        yield


def key_of(store: ArtifactStore, uri: str) -> str:
    assert uri.startswith(store.uri + "/"), f"{uri} is not in {store.uri}"
    return uri.removeprefix(store.uri + "/")


def append_batches(store: ArtifactStore, scenario: str, days: int = 2) -> None:
    """Batches for the days right after the stable ones, as `mlops demo drift` writes them."""
    synthetic.write_batches(synthetic.DEMO_SOURCE, start=START + timedelta(days=STABLE_DAYS),
                            days=days, rows_per_day=ROWS_PER_DAY, scenario=scenario,
                            store=store)  # fmt: skip


def past_cooldown(spec: ModelSpec) -> datetime:
    """A monitor time after the cooldown that v1's promotion started (as `mlops demo` uses)."""
    return datetime.now(UTC) + timedelta(hours=spec.drift.cooldown_hours, minutes=1)


@pytest.fixture(scope="module")
def spec() -> ModelSpec:
    return load_spec(SPEC_DIR / "credit_default.yaml")


def seed_and_train_v1(spec: ModelSpec, store: ArtifactStore) -> dict[str, Any]:
    synthetic.write_batches(synthetic.DEMO_SOURCE, start=START, days=STABLE_DAYS,
                            rows_per_day=ROWS_PER_DAY, store=store)  # fmt: skip
    trigger = pipeline.trigger_info("manual", user="pytest", reason="e2e: first model")
    return pipeline.run_retrain(spec, trigger, store=store, run_id="retrain-v1")


@dataclass(frozen=True)
class Base:
    root: Path
    store: LocalStore
    v1: dict[str, Any]


@pytest.fixture(scope="module")
def base(spec: ModelSpec, tmp_path_factory: pytest.TempPathFactory) -> Base:
    root = tmp_path_factory.mktemp("base") / "store"
    store = LocalStore(root)
    return Base(root, store, seed_and_train_v1(spec, store))


@pytest.fixture
def v1_store(base: Base, tmp_path: Path) -> LocalStore:
    """A private copy of the store in which v1 is in production."""
    shutil.copytree(base.root, tmp_path / "store")
    return LocalStore(tmp_path / "store")


def test_stable_batches_train_and_promote_v1(spec: ModelSpec, base: Base) -> None:
    st, v1 = base.store, base.v1
    reg = Registry(st)
    assert v1["trained"]["version"] == 1
    assert v1["validation"]["success"] is True
    assert v1["evaluation"]["passed"] is True and v1["evaluation"]["production_version"] is None
    assert v1["deployed"] == {"model": spec.name, "version": 1, "previous": None, "changed": True}
    assert reg.alias(spec.name) == 1
    meta = reg.get_version(spec.name, 1)
    assert meta["status"] == "production"
    assert meta["dataset"]["train"] == v1["snapshot"]["hash"]
    assert meta["dataset"]["rows"] == STABLE_DAYS * ROWS_PER_DAY
    assert meta["triggered_by"]["kind"] == "manual"
    assert meta["triggered_by"]["run_id"] == meta["airflow_run_id"] == "retrain-v1"
    assert meta["evaluation"]["decision"]["note"].startswith("first model")
    for uri in (v1["validation"]["report_uri"], v1["evaluation"]["report_uri"]):
        assert st.exists(key_of(st, uri))
    assert [e["action"] for e in reg.audit(spec.name)] == ["register", "promote"]


def test_covariate_shift_triggers_a_drift_retrain_then_the_cooldown_holds(
    spec: ModelSpec, v1_store: LocalStore
) -> None:
    store = v1_store
    reg = Registry(store)
    append_batches(store, "covariate_shift")

    decision = pipeline.run_monitor(spec, store=store, run_id="monitor-1", at=past_cooldown(spec))
    assert decision["decision"] == policy.RETRAIN, decision["reason"]
    assert decision["drift_share"] >= spec.drift.drift_share
    assert {"age", "income", "utilization", "region"} <= set(decision["drifted_columns"])
    assert set(decision["drifted_columns"]) <= SHIFTED  # unshifted columns are not flagged
    drift_key = key_of(store, decision["report_uri"])
    assert drift_key == "reports/credit_default/monitor-1/drift.html"
    assert store.exists(drift_key) and store.exists("reports/credit_default/monitor-1/drift.json")
    (request,) = reg.audit(spec.name, "retrain_request")
    assert request["details"]["report_uri"] == decision["report_uri"]
    assert request["details"]["check_id"] == decision["check_id"]

    second = pipeline.run_retrain(spec, pipeline.drift_trigger(decision), store=store,
                                  run_id="retrain-drift")  # fmt: skip
    assert second["trained"]["version"] == 2
    assert second["evaluation"]["passed"] and second["evaluation"]["production_version"] == 1
    assert second["deployed"]["previous"] == 1
    assert reg.alias(spec.name) == 2
    assert reg.get_version(spec.name, 1)["status"] == "archived"
    v2 = reg.get_version(spec.name, 2)
    trigger = v2["triggered_by"]
    assert trigger["kind"] == "drift" and trigger["user"] == "monitor"
    assert trigger["reason"] == decision["reason"]
    assert trigger["drift"]["report_uri"] == decision["report_uri"]
    assert trigger["drift"]["check_id"] == decision["check_id"]
    assert trigger["drift"]["monitor_run_id"] == "monitor-1"
    assert store.exists(key_of(store, trigger["drift"]["report_uri"]))
    assert v2["dataset"]["train"] != reg.get_version(spec.name, 1)["dataset"]["train"]
    (promotion,) = [e for e in reg.audit(spec.name, "promote") if e["to_version"] == 2]
    assert promotion["details"]["triggered_by"]["kind"] == "drift"

    # The data is still drifted, but a retrain was just requested: the cooldown holds.
    again = pipeline.run_monitor(spec, store=store, run_id="monitor-2")
    assert again["decision"] == policy.NO_RETRAIN
    assert again["reason"].startswith("within cooldown: last retrain request at ")
    last = policy.history(store, spec.name)[-1]
    assert last["check_id"] == again["check_id"] and last["run_id"] == "monitor-2"
    assert last["decision"] == policy.NO_RETRAIN and last["drift_detected"] is True
    assert last["reasons"][0].startswith("within cooldown: last retrain request at ")
    assert last["cooldown_blocked_by"] == "retrain request"
    assert last["reference_version"] == 2
    assert [c["decision"] for c in policy.history(store, spec.name)] == ["retrain", "no_retrain"]
    assert len(reg.audit(spec.name, "retrain_request")) == 1


def test_quality_break_fails_validation_and_keeps_production(
    spec: ModelSpec, v1_store: LocalStore
) -> None:
    store = v1_store
    reg = Registry(store)
    append_batches(store, "quality_break")
    with pytest.raises(
        DataValidationError, match=r"(?s)data validation failed .*\nReport: "
    ) as info:
        pipeline.run_retrain(spec, pipeline.trigger_info("manual", user="pytest"), store=store,
                             run_id="retrain-broken")  # fmt: skip
    failed_columns = {f["column"] for f in info.value.context["failed"]}
    assert {"income", "age", "region", "credit_score", "tenure_months"} <= failed_columns
    report = info.value.context["report_uri"]
    assert key_of(store, report) == "reports/credit_default/retrain-broken/validation.html"
    assert store.exists(key_of(store, report))
    assert reg.version_numbers(spec.name) == [1]
    assert reg.alias(spec.name) == 1
    assert [e["action"] for e in reg.audit(spec.name)] == ["register", "promote"]


def test_bad_candidate_is_rejected_by_the_gate(spec: ModelSpec, v1_store: LocalStore) -> None:
    store = v1_store
    reg = Registry(store)
    snap = pipeline.snapshot_data(spec, store=store)
    labels = load_snapshot(snap["hash"], store)[spec.target].to_numpy()
    shuffled = np.random.default_rng(0).permutation(labels)
    trigger = pipeline.trigger_info("manual", user="pytest", reason="shuffled labels")
    bad = train_candidate(spec, snap["hash"], trigger, run_id="retrain-bad", store=store,
                          label_override=shuffled)  # fmt: skip
    assert bad["version"] == 2
    assert reg.get_version(spec.name, 2)["labels_overridden"] is True

    evaluation = evaluate_candidate(spec, 2, "retrain-bad", store=store)
    assert evaluation["passed"] is False
    assert evaluation["production_version"] == 1
    assert any("vs production" in reason for reason in evaluation["failed"])
    assert evaluation["metrics"]["roc_auc"] < spec.evaluation.min["roc_auc"]
    with pytest.raises(GateFailed, match=r"credit_default v2 failed its gate: .*Report: ") as info:
        enforce_gate(spec, evaluation, store=store)
    assert info.value.context["report_uri"] == evaluation["report_uri"]
    assert store.exists(key_of(store, evaluation["report_uri"]))

    assert reg.get_version(spec.name, 2)["status"] == "rejected"
    assert reg.alias(spec.name) == 1
    (reject,) = reg.audit(spec.name, "reject")
    assert reject["to_version"] == 2 and reject["reason"].startswith("gate failed: ")
    with pytest.raises(RegistryError, match="rejected and cannot be promoted"):
        pipeline.deploy(spec, 2, trigger, "retrain-bad", store=store)
    assert reg.alias(spec.name) == 1


def test_drift_loop_on_s3(spec: ModelSpec, s3_store: S3Store) -> None:
    """The same loop against a real S3 endpoint: every read and write goes through boto3."""
    reg = Registry(s3_store)
    seed_and_train_v1(spec, s3_store)
    assert reg.alias(spec.name) == 1
    append_batches(s3_store, "covariate_shift")
    decision = pipeline.run_monitor(spec, store=s3_store, at=past_cooldown(spec))
    assert decision["decision"] == policy.RETRAIN, decision["reason"]
    assert decision["report_uri"].startswith(f"s3://{s3_store.bucket}/store/reports/")
    second = pipeline.run_retrain(spec, pipeline.drift_trigger(decision), store=s3_store)
    assert second["deployed"]["version"] == 2 and reg.alias(spec.name) == 2
    drift_uri = reg.get_version(spec.name, 2)["triggered_by"]["drift"]["report_uri"]
    assert drift_uri == decision["report_uri"]
    report = json.loads(s3_store.get_bytes(key_of(s3_store, drift_uri).replace(".html", ".json")))
    assert report["reference_version"] == 1 and report["data"]["drift_detected"] is True
    listed = s3_store.client.list_objects_v2(Bucket=s3_store.bucket, Prefix="store/models/")
    assert any(o["Key"].endswith("versions/2/model.skops") for o in listed["Contents"])
