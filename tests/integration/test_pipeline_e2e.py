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

import numpy as np
import pytest

from mlops_tasks.data import contracts, synthetic
from mlops_tasks.data.datasets import load_snapshot, snapshot
from mlops_tasks.errors import DataValidationError, GateFailed, RegistryError
from mlops_tasks.flow import steps
from mlops_tasks.flow.flows import DECIDE, DEPLOY, REQUEST, RETRAIN, SNAPSHOT, FlowRun
from mlops_tasks.model import deployment
from mlops_tasks.model.evaluation import enforce_gate, evaluate_candidate
from mlops_tasks.model.reproduce import reproduce
from mlops_tasks.model.training import train_candidate
from mlops_tasks.monitor import policy
from mlops_tasks.records import Deployment, Trigger
from mlops_tasks.registry import Registry
from mlops_tasks.specs import ModelSpec, load_spec
from mlops_tasks.storage import ArtifactStore, LocalStore, S3Store
from tests.flowkit import context, monitor, retrain

SPEC_DIR = Path(__file__).resolve().parents[2] / "dags" / "specs"
START = date(2026, 3, 1)
STABLE_DAYS, ROWS_PER_DAY = 6, 1500
#: Columns whose distribution the covariate_shift scenario moves.
SHIFTED = {
    "age",
    "income",
    "credit_limit",
    "balance",
    "utilization",
    "num_late_payments_12m",
    "months_since_last_delinquency",
    "debt_to_income",
    "num_credit_inquiries_6m",
    "avg_monthly_spend",
    "payment_to_income",
    "credit_score",
    "region",
    "channel",
}


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


def append_batches(store: ArtifactStore, scenario: str, days: int = 2) -> list[str]:
    """Batches for the days right after the stable ones, as `mlops demo drift` writes them."""
    return synthetic.write_batches(
        synthetic.DEMO_SOURCE,
        start=START + timedelta(days=STABLE_DAYS),
        days=days,
        rows_per_day=ROWS_PER_DAY,
        scenario=scenario,
        store=store,
    )


def past_cooldown(spec: ModelSpec) -> datetime:
    """A monitor time after the cooldown that v1's promotion started (as `mlops demo` uses)."""
    return datetime.now(UTC) + timedelta(hours=spec.drift.cooldown_hours, minutes=1)


def assert_reproduces(spec: ModelSpec, store: ArtifactStore, *versions: int) -> None:
    """`mlops reproduce`: each version rebuilds from its lineage to the same predictions and
    bytes (the issue's promise for every version the e2e tests create)."""
    for version in versions:
        result = reproduce(store, spec.name, version, {"package": "test", "git_sha": None})
        assert result.identical and result.spec_source == "stored", result.notes


@pytest.fixture(scope="module")
def spec() -> ModelSpec:
    return load_spec(SPEC_DIR / "credit_default.yaml")


def seed_and_train_v1(spec: ModelSpec, store: ArtifactStore) -> FlowRun:
    synthetic.write_batches(
        synthetic.DEMO_SOURCE, start=START, days=STABLE_DAYS, rows_per_day=ROWS_PER_DAY, store=store
    )
    trigger = Trigger("manual", user="pytest", reason="e2e: first model")
    return retrain(spec, store, trigger, run_id="retrain-v1")


@dataclass(frozen=True)
class Base:
    root: Path
    store: LocalStore
    v1: FlowRun


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
    st, v1 = base.store, base.v1.outputs
    reg = Registry(st)
    assert base.v1.status == "success"
    assert v1["train_candidate"].version == 1
    assert v1["validate_data"].success is True
    evaluation = v1["evaluate_candidate"]
    assert evaluation.passed is True and evaluation.production_version is None
    assert v1["deploy"] == Deployment(spec.name, 1, None, True)
    assert reg.alias(spec.name) == 1
    meta = reg.get_version(spec.name, 1)
    assert meta.status == "production"
    assert meta.dataset.train == v1["snapshot_data"].hash
    assert meta.dataset.rows == STABLE_DAYS * ROWS_PER_DAY
    assert meta.triggered_by.kind == "manual"
    assert meta.triggered_by.run_id == meta.run_id == "retrain-v1"
    assert meta.evaluation and meta.evaluation["decision"]["note"].startswith("first model")
    for uri in (v1["validate_data"].report_uri, evaluation.report_uri):
        assert st.exists(key_of(st, uri))
    assert [e["action"] for e in reg.audit(spec.name)] == ["register", "promote"]
    # Every step left its record, in flow order.
    steps_run = [s for s in RETRAIN.for_spec(spec)]
    for step in steps_run:
        record = st.get_json(f"runs/{spec.name}/retrain-v1/{step.name}.json")
        assert record["status"] == "success" and record["flow"] == "retrain"
    assert_reproduces(spec, st, 1)


def test_covariate_shift_triggers_a_drift_retrain_then_the_cooldown_holds(
    spec: ModelSpec, v1_store: LocalStore
) -> None:
    store = v1_store
    reg = Registry(store)
    append_batches(store, "covariate_shift")

    run = monitor(spec, store, run_id="monitor-1", as_of=past_cooldown(spec))
    decision = run[DECIDE]
    assert decision.decision == policy.RETRAIN, decision.reason
    assert decision.drift_share >= spec.drift.drift_share
    assert {"age", "income", "utilization", "region"} <= set(decision.drifted_columns)
    assert set(decision.drifted_columns) <= SHIFTED  # unshifted columns are not flagged
    drift_key = key_of(store, decision.report_uri)
    assert drift_key == "reports/credit_default/monitor-1/drift.html"
    assert store.exists(drift_key) and store.exists("reports/credit_default/monitor-1/drift.json")
    (request_event,) = reg.audit(spec.name, "retrain_request")
    assert request_event["details"]["report_uri"] == decision.report_uri
    assert request_event["details"]["check_id"] == decision.check_id
    request = run[REQUEST]
    assert request.monitor_run_id == "monitor-1" and request.as_of == decision.as_of

    second = retrain(
        spec, store, Trigger.from_request(request), run_id="retrain-drift", as_of=request.as_of
    ).outputs
    assert second["train_candidate"].version == 2
    assert second["evaluate_candidate"].passed
    assert second["evaluate_candidate"].production_version == 1
    assert second["deploy"].previous == 1
    assert reg.alias(spec.name) == 2
    assert reg.get_version(spec.name, 1).status == "archived"
    v2 = reg.get_version(spec.name, 2)
    trigger = v2.triggered_by
    assert trigger.kind == "drift" and trigger.user == "monitor"
    assert trigger.reason == decision.reason
    assert trigger.drift == request
    assert store.exists(key_of(store, trigger.drift.report_uri))
    assert v2.dataset.train != reg.get_version(spec.name, 1).dataset.train
    (promotion,) = [e for e in reg.audit(spec.name, "promote") if e["to_version"] == 2]
    assert promotion["details"]["triggered_by"]["kind"] == "drift"
    assert_reproduces(spec, store, 2)

    # The data is still drifted, but a retrain was just requested: the cooldown holds.
    again = monitor(
        spec, store, run_id="monitor-2", as_of=past_cooldown(spec) + timedelta(minutes=1)
    )
    verdict = again[DECIDE]
    assert again.status == "skipped" and again.stopped_at == "request_retrain"
    assert verdict.decision == policy.NO_RETRAIN
    assert verdict.reason.startswith("within cooldown: last retrain request at ")
    last = policy.history(store, spec.name)[-1]
    assert last["check_id"] == verdict.check_id and last["run_id"] == "monitor-2"
    assert last["decision"] == policy.NO_RETRAIN and last["drift_detected"] is True
    assert last["reasons"][0].startswith("within cooldown: last retrain request at ")
    assert last["cooldown_blocked_by"] == "retrain request"
    assert last["reference_version"] == 2
    assert [c["decision"] for c in policy.history(store, spec.name)] == ["retrain", "no_retrain"]
    assert len(reg.audit(spec.name, "retrain_request")) == 1


def test_quality_break_fails_validation_and_keeps_production(
    spec: ModelSpec, v1_store: LocalStore
) -> None:
    """Broken batches break the declared contract: quarantined, named, audited; with
    `on_bad_batch: fail` the run stops before training and production stays."""
    store = v1_store
    reg = Registry(store)
    broken = append_batches(store, "quality_break")
    strict = spec.model_copy(
        update={"validation": spec.validation.model_copy(update={"on_bad_batch": "fail"})}
    )
    with pytest.raises(DataValidationError, match=r"(?s)2 batch\(es\).*on_bad_batch") as info:
        retrain(strict, store, run_id="retrain-broken")
    assert info.value.context["batches"] == broken
    held = contracts.quarantined(store, spec.name)
    assert [q["batch"] for q in held] == broken
    failed_columns = {f["column"] for f in held[0]["failures"]}
    assert {"income", "age", "credit_score", "tenure_months"} <= failed_columns
    assert reg.version_numbers(spec.name) == [1]
    assert reg.alias(spec.name) == 1
    actions = [e["action"] for e in reg.audit(spec.name)]
    assert actions == ["register", "promote", "batch_quarantined", "batch_quarantined"]
    failed = store.get_json("runs/credit_default/retrain-broken/snapshot_data.json")
    assert failed["status"] == "failed" and failed["error"].startswith("DataValidationError")

    # By default the run goes on without them (the self-healing path), and says so.
    run = retrain(spec, store, run_id="retrain-healed")
    assert run[SNAPSHOT].quarantined == tuple(broken)
    report = store.get_json("reports/credit_default/retrain-healed/validation.json")
    assert report["quarantined"] == broken
    assert_reproduces(spec, store, 2)


def test_bad_candidate_is_rejected_by_the_gate(spec: ModelSpec, v1_store: LocalStore) -> None:
    """A model trained on shuffled labels must never reach production."""
    store = v1_store
    reg = Registry(store)
    snap = steps.snapshot_data(context(spec, store))
    frame = load_snapshot(snap.hash, store)
    shuffled = frame.assign(
        **{spec.target: np.random.default_rng(0).permutation(frame[spec.target].to_numpy())}
    )
    bad_snap = snapshot(shuffled, ["shuffled labels"], store)
    trigger = Trigger("manual", user="pytest", reason="shuffled labels")
    code = {"package": "test", "git_sha": None}
    bad = train_candidate(spec, bad_snap.hash, trigger, "retrain-bad", store, code)
    assert bad.version == 2

    evaluation = evaluate_candidate(spec, 2, "retrain-bad", store)
    assert evaluation.passed is False
    assert evaluation.production_version == 1
    assert any("vs production" in reason for reason in evaluation.failed)
    assert evaluation.metrics["roc_auc"] < spec.evaluation.min["roc_auc"]
    with pytest.raises(GateFailed, match=r"credit_default v2 failed its gate: .*Report: ") as info:
        enforce_gate(spec, evaluation, store, actor="pytest")
    assert info.value.context["report_uri"] == evaluation.report_uri
    assert store.exists(key_of(store, evaluation.report_uri))

    assert reg.get_version(spec.name, 2).status == "rejected"
    assert reg.alias(spec.name) == 1
    (reject,) = reg.audit(spec.name, "reject")
    assert reject["to_version"] == 2 and reject["reason"].startswith("gate failed: ")
    with pytest.raises(RegistryError, match="rejected and cannot be promoted"):
        deployment.deploy(spec, 2, trigger, "retrain-bad", store)
    assert reg.alias(spec.name) == 1
    assert_reproduces(spec, store, 2)  # a rejected version rebuilds too


def test_drift_loop_on_s3(spec: ModelSpec, s3_store: S3Store) -> None:
    """The same loop against a real S3 endpoint: every read and write goes through boto3."""
    reg = Registry(s3_store)
    seed_and_train_v1(spec, s3_store)
    assert reg.alias(spec.name) == 1
    append_batches(s3_store, "covariate_shift")
    run = monitor(spec, s3_store, as_of=past_cooldown(spec))
    decision = run[DECIDE]
    assert decision.decision == policy.RETRAIN, decision.reason
    assert decision.report_uri.startswith(f"s3://{s3_store.bucket}/store/reports/")
    request = run[REQUEST]
    second = retrain(spec, s3_store, Trigger.from_request(request), as_of=request.as_of)
    assert second[DEPLOY].version == 2 and reg.alias(spec.name) == 2
    drift = reg.get_version(spec.name, 2).triggered_by.drift
    assert drift is not None and drift.report_uri == decision.report_uri
    report = json.loads(
        s3_store.get_bytes(key_of(s3_store, drift.report_uri).replace(".html", ".json"))
    )
    assert report["reference_version"] == 1 and report["data"]["drift_detected"] is True
    listed = s3_store.client.list_objects_v2(Bucket=s3_store.bucket, Prefix="store/models/")
    assert any(o["Key"].endswith("versions/2/model.skops") for o in listed["Contents"])
    assert_reproduces(spec, s3_store, 1, 2)
