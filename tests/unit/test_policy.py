"""Retrain policy: minimum rows, hysteresis, cooldowns; checks recorded and audited."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from mlops_tasks.monitor import policy
from mlops_tasks.monitor.policy import NO_RETRAIN, RETRAIN
from mlops_tasks.records import DataDrift, Decision, DriftResult, MonitoringCheck, PerformanceDrift
from mlops_tasks.registry import Registry
from mlops_tasks.specs import ModelSpec, load_spec
from mlops_tasks.storage import ArtifactStore

SPEC_DIR = Path(__file__).resolve().parents[2] / "dags" / "specs"
AT = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)
DRIFTED = {"drift_detected": True, "drifted_share": 0.5, "drifted_columns": ["age", "income"]}
CALM = {"drift_detected": False, "drifted_share": 0.04, "drifted_columns": ["age"]}
PERF_DROP = {"drift_detected": True, "summary": "performance: roc_auc 0.6100 (drop +0.1800)"}
PERF_OK = {"drift_detected": False, "summary": "performance: roc_auc 0.7900 (drop +0.0000)"}


@pytest.fixture(scope="module")
def spec() -> ModelSpec:
    """The demo spec with the policy this module reasons about spelled out."""
    data = load_spec(SPEC_DIR / "credit_default.yaml").model_dump(mode="json")
    data["drift"] |= {
        "min_rows": 500,
        "consecutive_checks": 2,
        "cooldown_hours": 6.0,
        "drift_share": 0.25,
    }
    return ModelSpec.model_validate(data)


def drift(
    data: dict[str, Any], perf: dict[str, Any] | None, rows: int = 3000, reference: int = 4
) -> DriftResult:
    """A drift result with the given data and performance findings."""
    return DriftResult(
        reference_version=reference,
        reference_hash="0" * 64,
        current_hash="1" * 64,
        reference_rows=5000,
        current_rows=rows,
        data=DataDrift(
            columns=(),
            drifted_columns=tuple(data["drifted_columns"]),
            drifted_share=data["drifted_share"],
            threshold_share=0.25,
            drift_detected=data["drift_detected"],
        ),
        performance=PerformanceDrift(perf["drift_detected"], "roc_auc", 400, perf["summary"])
        if perf
        else None,
        report_uri="s3://r/drift.html",
    )


def promoted(at: str | None, version: int = 4) -> policy.ProductionMove | None:
    """Production as a promotion at `at` left it (None: nothing promoted yet)."""
    return None if at is None else policy.ProductionMove(version, "promote", at)


def decide(
    spec: ModelSpec,
    found: DriftResult,
    checks: list[dict[str, Any]],
    promoted_at: str | None = None,
    as_of: datetime = AT,
) -> Decision:
    move = promoted(promoted_at, found.reference_version)
    return policy.apply_policy(spec, found, stored(checks), move, as_of, "mon-x")


def stored(checks: list[dict[str, Any]]) -> list[MonitoringCheck]:
    """Checks as the policy reads them from the store (`policy.checks`)."""
    return [policy.check_record(c) for c in checks]


def stamp(hours_ago: float) -> str:
    """A timestamp as the registry writes them (ISO 8601, microseconds, `Z`)."""
    at = AT - timedelta(hours=hours_ago)
    return at.isoformat(timespec="microseconds").replace("+00:00", "Z")


def past(hours_ago: float, drift: bool = True, decision: str = NO_RETRAIN) -> dict[str, Any]:
    return {"at": stamp(hours_ago), "drift_detected": drift, "decision": decision}


CASES = [
    pytest.param(
        DRIFTED,
        None,
        499,
        [past(1)],
        None,
        NO_RETRAIN,
        "only 499 rows in the current window (< minimum 500)",
        2,
        id="too-few-rows-even-with-persistent-drift",
    ),
    pytest.param(
        CALM,
        PERF_OK,
        3000,
        [past(1)],
        None,
        NO_RETRAIN,
        "no drift detected",
        0,
        id="no-drift",
    ),
    pytest.param(
        DRIFTED,
        None,
        3000,
        [],
        None,
        NO_RETRAIN,
        "drift seen in 1 consecutive check(s); 2 required",
        1,
        id="first-drifted-check-waits-for-a-second",
    ),
    pytest.param(
        DRIFTED,
        None,
        3000,
        [past(2), past(1, drift=False)],
        None,
        NO_RETRAIN,
        "drift seen in 1 consecutive check(s); 2 required",
        1,
        id="calm-check-resets-the-streak",
    ),
    pytest.param(
        DRIFTED,
        None,
        3000,
        [past(2, drift=False), past(1)],
        None,
        RETRAIN,
        "batches (age, income) drifted for 2 consecutive check(s)",
        2,
        id="second-consecutive-drift-retrains",
    ),
    pytest.param(
        CALM,
        PERF_DROP,
        3000,
        [past(1, drift=True)],
        None,
        RETRAIN,
        "",
        2,
        id="performance-drift-alone-retrains",
    ),
    pytest.param(
        DRIFTED,
        None,
        3000,
        [past(2, decision=RETRAIN), past(1)],
        None,
        NO_RETRAIN,
        f"within cooldown: last retrain request at {stamp(2)} (2.0 h before this "
        "check); retraining is allowed again from 2026-03-10 16:00 UTC (4.0 h later)",
        3,
        id="cooldown-since-retrain-request",
    ),
    pytest.param(
        DRIFTED,
        None,
        3000,
        [past(7, decision=RETRAIN), past(1)],
        None,
        RETRAIN,
        "",
        3,
        id="retrain-request-older-than-cooldown",
    ),
    pytest.param(
        DRIFTED,
        None,
        3000,
        [past(1)],
        stamp(5.5),
        NO_RETRAIN,
        f"within cooldown: v4 is in production by promotion at {stamp(5.5)} (5.5 h before "
        "this check); "
        "retraining is allowed again from 2026-03-10 12:30 UTC (30 min later)",
        2,
        id="cooldown-since-promotion",
    ),
    pytest.param(
        DRIFTED,
        None,
        3000,
        [past(1)],
        stamp(6.5),
        RETRAIN,
        "",
        2,
        id="promotion-older-than-cooldown",
    ),
]


@pytest.mark.parametrize(
    ("data", "perf", "rows", "checks", "promoted_at", "expected", "first_reason", "streak"), CASES
)
def test_decide(
    spec: ModelSpec,
    data: dict[str, Any],
    perf: dict[str, Any] | None,
    rows: int,
    checks: list[dict[str, Any]],
    promoted_at: str | None,
    expected: str,
    first_reason: str,
    streak: int,
) -> None:
    d = decide(spec, drift(data, perf, rows), checks, promoted_at)
    assert d.decision == expected
    assert d.reasons[0].startswith(first_reason), d.reasons
    assert d.streak == streak
    assert d.current_rows == rows
    if expected == RETRAIN:  # what decided comes first
        assert d.reasons[0].endswith(
            f"drifted for {streak} consecutive check(s) and no cooldown applies"
        )
    # Every decision keeps the evidence it was based on.
    assert any(r.startswith("data drift (batches): ") for r in d.reasons)
    if perf:
        assert perf["summary"] in d.reasons


@pytest.mark.parametrize(
    ("checks", "promoted_at", "blocked_by"),
    [
        pytest.param([past(0.5, decision=RETRAIN)], None, "retrain request", id="request"),
        pytest.param([past(1)], stamp(0.5), "promotion", id="promotion"),
    ],
)
def test_cooldown_names_what_blocked_it(
    spec: ModelSpec, checks: list[dict[str, Any]], promoted_at: str | None, blocked_by: str
) -> None:
    d = decide(spec, drift(DRIFTED, None), checks, promoted_at)
    assert (d.decision, d.drift_detected) == (NO_RETRAIN, True)
    assert d.blocked_by == blocked_by


def test_cooldown_reads_the_logical_time_not_the_clock(spec: ModelSpec) -> None:
    """A replayed check a day after a promotion is past the cooldown, whenever it runs."""
    promoted = "2026-03-09T12:00:00.000000Z"
    # The drifted check before both lies in the past of each (one 1 h before AT would lie
    # after the early check, which does not count it).
    replayed = decide(spec, drift(DRIFTED, None), [past(21)], promoted, as_of=AT)
    assert replayed.decision == RETRAIN
    early = decide(spec, drift(DRIFTED, None), [past(21)], promoted, as_of=AT - timedelta(hours=20))
    assert early.blocked_by == "promotion"


def test_checks_decided_for_later_dates_are_not_a_checks_past(spec: ModelSpec) -> None:
    """A replay run again over earlier dates finds the later checks of its first pass in the
    store: they neither extend its streak nor start a cooldown in its future."""
    later = [
        past(-30, decision=RETRAIN) | {"decided_for": stamp(-30)},
        past(-20) | {"decided_for": stamp(-20)},
    ]
    d = decide(spec, drift(DRIFTED, None), [past(3), *later])
    assert d.decision == RETRAIN and d.streak == 2
    alone = decide(spec, drift(DRIFTED, None), later)
    assert (alone.decision, alone.streak) == (NO_RETRAIN, 1)
    assert alone.blocked_by is None


def test_a_move_after_the_checks_as_of_counts_from_the_first_check_that_saw_it(
    spec: ModelSpec,
) -> None:
    """A promotion a lagging check sees (its as_of before the move) is placed at that check's
    as_of, and later checks count from there: within one clock, never a negative span."""
    move = policy.ProductionMove(4, "promote", stamp(-2), event_id="e1")
    first = policy.apply_policy(spec, drift(DRIFTED, None), stored([past(1)]), move, AT, "m")
    assert (first.blocked_by, first.production_since) == ("promotion", AT.isoformat())
    assert first.reasons[0].endswith(
        "counted from 2026-03-10 12:00 UTC, the as_of of the first check that saw it (0 min "
        "before this check); retraining is allowed again from 2026-03-10 18:00 UTC (6.0 h later)"
    )
    seen = past(0) | {"production_move": "e1", "production_since": AT.isoformat()}
    before = AT + timedelta(hours=1)
    second = policy.apply_policy(spec, drift(DRIFTED, None), stored([seen]), move, before, "m")
    assert second.production_since == AT.isoformat()
    assert "(60 min before this check)" in second.reasons[0]
    # Once the check's as_of has passed the move, it counts from the move itself.
    later = AT + timedelta(hours=7)
    third = policy.apply_policy(spec, drift(DRIFTED, None), stored([seen]), move, later, "m")
    assert third.production_since == datetime.fromisoformat(stamp(-2)).isoformat()
    assert third.blocked_by == "promotion" and "(5.0 h before this check)" in third.reasons[0]


def verdict(kind: str, reasons: list[str], detected: bool, streak: int, i: int = 0) -> Decision:
    return Decision(
        decision=kind,  # type: ignore[arg-type]
        reasons=tuple(reasons),
        drift_detected=detected,
        streak=streak,
        check_id=f"{i:032x}",
        report_uri=f"s3://r/{i}.html",
        drift_share=0.5,
        drifted_columns=("age",),
        run_id=f"mon-{i}",
        as_of=AT + timedelta(minutes=i),
        current_rows=900,
    )


def test_record_check_and_history_roundtrip(store: ArtifactStore) -> None:
    decisions = [
        verdict(NO_RETRAIN, ["no drift detected"], False, 0, 0),
        verdict(NO_RETRAIN, ["drift seen in 1 consecutive check(s); 2 required"], True, 1, 1),
        verdict(
            RETRAIN, ["retrain: drift persisted for 2 check(s)", "data drift: 50%"], True, 2, 2
        ),
    ]
    records = [policy.record_check(store, "m", d, drift(DRIFTED, None)) for d in decisions]
    got = policy.history(store, "m")
    assert got == records
    assert [c["decision"] for c in got] == [NO_RETRAIN, NO_RETRAIN, RETRAIN]
    assert [c["streak"] for c in got] == [0, 1, 2]
    assert got[0]["current_rows"] == 900
    assert got[2]["reasons"] == list(decisions[2].reasons)
    assert got[1]["run_id"] == "mon-1" and got[1]["report_uri"] == "s3://r/1.html"
    assert got[1]["decided_for"] == (AT + timedelta(minutes=1)).isoformat()
    assert all(c["model"] == "m" and len(c["check_id"]) == 32 for c in got)
    assert [c["at"] for c in got] == sorted(c["at"] for c in got)
    assert policy.history(store, "m", limit=2) == records[1:]
    assert policy.history(store, "other") == []


def test_retrain_decision_writes_an_audit_event(store: ArtifactStore) -> None:
    reg = Registry(store)
    policy.record_check(
        store, "m", verdict(NO_RETRAIN, ["no drift"], False, 0, 0), drift(CALM, None)
    )
    assert reg.audit("m", "retrain_request") == []
    drifted = verdict(RETRAIN, ["retrain: drift persisted", "data drift: 50%"], True, 1, 1)
    record = policy.record_check(store, "m", drifted, drift(DRIFTED, None))
    (event,) = reg.audit("m", "retrain_request")
    assert event["actor"] == "monitor"
    assert event["reason"] == "retrain: drift persisted; data drift: 50%"
    assert event["details"] == {
        "check_id": record["check_id"],
        "report_uri": "s3://r/1.html",
        "run_id": "mon-1",
    }
    assert [e["action"] for e in reg.audit("m")] == ["retrain_request"]


@pytest.mark.parametrize(
    ("previous", "streak"),
    [
        pytest.param({"current_rows": 3000, "reference_version": 4}, 2, id="counts"),
        pytest.param(
            {"current_rows": 120, "reference_version": 4}, 1, id="too-few-rows-does-not-count"
        ),
        pytest.param(
            {"current_rows": 3000, "reference_version": 3},
            1,
            id="new-production-version-restarts-the-streak",
        ),
    ],
)
def test_streak_counts_only_checks_that_counted(spec: ModelSpec, previous, streak: int) -> None:
    history = [{**past(1), **previous}]
    d = decide(spec, drift(DRIFTED, None, reference=4), history)
    assert d.streak == streak
    assert d.decision == (RETRAIN if streak >= 2 else NO_RETRAIN)


# Concurrent monitors -------------------------------------------------------------------------
def _decide_in_process(
    store_uri: str, endpoint: str | None, spec: ModelSpec, i: int, barrier, out
) -> None:
    from mlops_tasks.flow import steps
    from mlops_tasks.flow.context import RunContext
    from mlops_tasks.records import Trigger
    from mlops_tasks.settings import Settings
    from mlops_tasks.storage import open_store

    store = open_store(store_uri, endpoint_url=endpoint)
    ctx = RunContext.create(
        spec,
        store,
        Settings.from_env({}),
        f"monitor-{i}",
        Trigger("schedule", reason="monitor"),
        as_of=AT + timedelta(minutes=i),  # all within one 6 h cooldown window
    )
    barrier.wait()
    decision = steps.decide(ctx, drift(DRIFTED, None))
    out.put((decision.decision, decision.reasons[0], decision.blocked_by))


def test_concurrent_monitors_emit_at_most_one_retrain_request(
    store: ArtifactStore, spec: ModelSpec
) -> None:
    """Two monitors at once could both decide to retrain (one retrain happened by timing)."""
    import multiprocessing as mp

    from mlops_tasks.flow import steps  # noqa: F401  (imported once here, inherited by the forks)
    from tests.unit.test_registry import _uri

    data = spec.model_dump(mode="json")
    eager = ModelSpec.model_validate(data | {"drift": data["drift"] | {"consecutive_checks": 1}})
    uri, endpoint = _uri(store)
    workers = 6
    ctx = mp.get_context("fork")
    barrier, out = ctx.Barrier(workers), ctx.Queue()
    procs = [
        ctx.Process(target=_decide_in_process, args=(uri, endpoint, eager, i, barrier, out))
        for i in range(workers)
    ]
    for p in procs:
        p.start()
    outcomes = [out.get(timeout=240) for _ in procs]
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    retrains = [o for o in outcomes if o[0] == RETRAIN]
    losers = [o for o in outcomes if o[0] == NO_RETRAIN]
    assert len(retrains) == 1 and len(losers) == workers - 1
    # A loser either lost the conditional write or, starting later, saw the winner's check
    # in the history (the cooldown); both name the retrain request that blocked it.
    assert all(blocked == "retrain request" for _, _, blocked in losers)
    assert all(
        reason.startswith(("another monitor already requested a retrain of v4", "within cooldown"))
        for _, reason, _ in losers
    )
    assert len(Registry(store).audit(eager.name, "retrain_request")) == 1
    checks = policy.history(store, eager.name)
    assert sorted(c["decision"] for c in checks) == [NO_RETRAIN] * (workers - 1) + [RETRAIN]
    assert len(store.list_keys(f"models/{eager.name}/requests/")) == 1


def test_a_retried_monitor_run_keeps_its_own_retrain_request(store: ArtifactStore) -> None:
    first = verdict(RETRAIN, ["retrain: drift persisted", "data drift: 50%"], True, 2, 1)
    decided, _ = policy.record_decision(store, "m", first, drift(DRIFTED, None), 6.0)
    assert decided.decision == RETRAIN
    retry = replace(first, check_id="f" * 32)  # the same run, tried again
    assert policy.record_decision(store, "m", retry, drift(DRIFTED, None), 6.0)[0].decision == (
        RETRAIN
    )
    other = verdict(RETRAIN, ["retrain: drift persisted"], True, 2, 2)
    lost, record = policy.record_decision(store, "m", other, drift(DRIFTED, None), 6.0)
    assert lost.decision == NO_RETRAIN and record["decision"] == NO_RETRAIN
    assert record["cooldown_blocked_by"] == "retrain request"


# A retrain that cannot fix what it was asked for is not repeated: it is escalated -------------
def asked(hours_ago: float, reference: int, evidence: list[str], check: str = "c1") -> dict:
    """A past check that requested a retrain of `reference` on `evidence`."""
    return {
        **past(hours_ago, decision=RETRAIN),
        "reference_version": reference,
        "evidence": evidence,
        "check_id": check,
    }


def test_drift_that_survives_the_retrain_it_asked_for_is_escalated(spec: ModelSpec) -> None:
    """v4 drifted on performance and a retrain was asked; v5 (from that retrain) is now in
    production and drifts the same way: a person decides, not another retrain."""
    found = drift(CALM, PERF_DROP, reference=5)
    checks = [asked(30, 4, ["performance"]), past(1, drift=True) | {"reference_version": 5}]
    by_retrain = policy.ProductionMove(5, "promote", stamp(20), "monitor", from_version=4)
    d = policy.apply_policy(
        spec, found, stored(checks), by_retrain, AT, "mon-x", answers={"c1": [(5, "production")]}
    )
    assert d.decision == policy.ESCALATE
    assert d.reasons[0] == (
        f"the retrain requested at {stamp(30)} on the same evidence produced v5; v5 is in "
        f"production by promotion from v4 at {stamp(20)} by monitor, and it drifts the same "
        f"way; {PERF_DROP['summary']}; retraining on this data again would not fix it"
    )
    assert d.evidence == ("performance",)
    # What drifted leads the evidence that follows the decision.
    assert d.reasons[1] == PERF_DROP["summary"]


#: Production's live performance as `drift.performance_drift` measures it on labelled rows.
LIVE = PerformanceDrift(
    True,
    "roc_auc",
    2000,
    "performance: roc_auc 0.3800 on 2000 labelled rows vs 0.7900 at training "
    "(fell, worse by 0.4100; at most 0.05 worse allowed)",
    current=0.38,
    baseline=0.79,
    drop=0.41,
    max_drop=0.05,
)
LIVE_LINE = "live roc_auc 0.3800 on 2000 labelled rows (0.7900 at training)"


ASKED = AT - timedelta(hours=30)


@pytest.fixture
def rolled_back(tmp_path: Path, spec: ModelSpec) -> ArtifactStore:
    """v3 drifted and a retrain was asked (check `c1`); it made v4, which went into
    production; alice rolled production back to v1 (a user's report: the escalation that
    followed said the retrain had put v1 in production)."""
    from mlops_tasks.model import deployment
    from mlops_tasks.records import RetrainRequest, Trigger
    from mlops_tasks.storage import LocalStore
    from tests.unit.test_registry import lineage, model_bytes, register_gated

    store = LocalStore(tmp_path / "store")
    reg = Registry(store)
    for seed in range(3):
        reg.promote(spec.name, register_gated(reg, spec.name, seed), reason="by hand", actor="t")
    asking = replace(
        verdict(RETRAIN, ["drift persisted"], True, 2),
        check_id="c1",
        as_of=ASKED,
        evidence=("age", "income", "performance"),
    )
    policy.record_check(store, spec.name, asking, drift(DRIFTED, None, reference=3))
    request = RetrainRequest(spec.name, "drift", "s3://r/c1.html", 0.5, ("age",), "mon-1", "c1")
    trigger = Trigger.from_request(request, run_id="retrain-1")
    made = reg.register(
        spec.name, model_bytes(3), replace(lineage(), triggered_by=trigger), actor="monitor"
    )
    reg.record_evaluation(spec.name, made.version, {"decision": {"passed": True, "checks": []}})
    deployment.deploy(spec, made.version, trigger, "retrain-1", store, as_of=AT)
    reg.rollback(spec.name, reason="v4 misbehaves", actor="alice", to=1)
    return store


def test_an_escalation_after_a_rollback_says_what_the_rollback_and_the_retrain_did(
    spec: ModelSpec, rolled_back: ArtifactStore
) -> None:
    from mlops_tasks.flow import steps
    from mlops_tasks.flow.context import RunContext
    from mlops_tasks.records import Trigger
    from mlops_tasks.settings import Settings

    data = spec.model_dump(mode="json")
    eager = {"cooldown_hours": 0, "consecutive_checks": 1}  # the escalation alone decides
    ctx = RunContext.create(
        ModelSpec.model_validate(data | {"drift": data["drift"] | eager}),
        rolled_back,
        Settings.from_env({}),
        "mon-2",
        Trigger("schedule", reason="monitor"),
        as_of=AT + timedelta(hours=1),
    )
    found = replace(drift(DRIFTED, None, reference=1), performance=LIVE)
    d = steps.decide(ctx, found)
    assert d.decision == policy.ESCALATE
    (rollback,) = Registry(rolled_back).audit(spec.name, "rollback")
    lead = d.reasons[0]
    assert "put v1 in production" not in lead
    assert lead == (
        f"the retrain requested at {ASKED.isoformat()} on the same evidence produced v4 (since "
        "out of "
        f"production); v1 is in production by rollback from v4 at {rollback['at']} by alice, "
        f"and it drifts the same way; {LIVE_LINE}; retraining on the same evidence again is "
        "left to a person"
    )
    (event,) = Registry(rolled_back).audit(spec.name, "escalate")
    assert event["reason"].startswith(lead)


def _by_hand(reg: Registry, m: str) -> None:
    reg.promote(m, 2, reason="better", actor="bob")


def _forced(reg: Registry, m: str) -> None:
    reg.promote(m, 3, reason="try it", actor="bob", force=True)


def _rolled_back(reg: Registry, m: str) -> None:
    reg.promote(m, 2, reason="better", actor="bob")
    reg.rollback(m, reason="bad", actor="alice")


def _repaired(reg: Registry, m: str) -> None:
    reg.promote(m, 2, reason="better", actor="bob")
    reg.repair_alias(m, reason="restore", actor="carol", to=1)


@pytest.mark.parametrize(
    ("move", "text"),
    [
        pytest.param(_by_hand, "v2 is in production by promotion from v1", id="promotion"),
        pytest.param(_forced, "v3 is in production by forced promotion from v1", id="forced"),
        pytest.param(_rolled_back, "v1 is in production by rollback from v2", id="rollback"),
        pytest.param(_repaired, "v1 is in production by alias repair from v2", id="repair"),
    ],
)
def test_one_text_says_how_production_got_there(
    tmp_path: Path, move: Callable[[Registry, str], None], text: str
) -> None:
    """Whichever event moved production, as the alias document keeps it (and the audit)."""
    from mlops_tasks.storage import LocalStore
    from tests.unit.test_registry import lineage, model_bytes, register_gated

    reg = Registry(LocalStore(tmp_path / "store"))
    for seed in range(2):
        register_gated(reg, "m", seed)
    reg.register("m", model_bytes(2), lineage(), actor="t")  # v3: no gate result
    reg.promote("m", 1, reason="first", actor="t")
    move(reg, "m")
    alias = reg.production_alias("m")
    assert alias is not None
    found = policy.production_move(alias)
    assert found is not None and policy.production_move(None) is None
    last = reg.audit("m")[-1]
    assert (
        policy.in_production(found, alias.version) == f"{text} at {last['at']} by {last['actor']}"
    )
    # A check that judged another version does not pass this move off as its own.
    assert policy.in_production(found, 9) == (
        f"v9 was in production when this check began; {text} at {last['at']} by {last['actor']}"
    )


@pytest.mark.parametrize(
    ("perf", "shown"),
    [
        pytest.param(LIVE, LIVE_LINE, id="measured"),
        pytest.param(
            PerformanceDrift(
                False, "roc_auc", 120, "performance: 120 labelled rows (< 200 needed); not checked"
            ),
            "performance: 120 labelled rows (< 200 needed); not checked",
            id="too-few-labels-says-so",
        ),
        pytest.param(None, None, id="no-labels"),
    ],
)
def test_every_escalation_reason_shows_the_live_performance(
    spec: ModelSpec, perf: PerformanceDrift | None, shown: str | None
) -> None:
    """The lead is what `mlops checks` and the Models view show: performance belongs there."""
    found = replace(drift(DRIFTED, None, reference=4), performance=perf)
    checks = [asked(30, 4, ["age", "income"]), past(1)]
    rejected = policy.apply_policy(
        spec,
        found,
        stored(checks),
        promoted(stamp(40)),
        AT,
        "mon-x",
        answers={"c1": [(5, "rejected")]},
    )
    escalated = {**asked(2, 4, ["age"], "c2"), "decision": policy.ESCALATE}
    held = decide(spec, found, [*checks, escalated])
    assert (rejected.decision, held.blocked_by) == (policy.ESCALATE, "escalation")
    for lead in (rejected.reasons[0], held.reasons[0]):
        if shown is None:
            assert "performance" not in lead and "labelled" not in lead
        else:
            assert f"; {shown}; " in lead


def test_the_cooldown_after_a_rollback_names_the_rollback(spec: ModelSpec) -> None:
    back = policy.ProductionMove(1, "rollback", stamp(1), "alice", from_version=4)
    d = policy.apply_policy(
        spec, drift(DRIFTED, None, reference=1), stored([past(2)]), back, AT, "m"
    )
    assert d.blocked_by == "promotion"
    assert d.reasons[0].startswith(
        f"within cooldown: v1 is in production by rollback from v4 at {stamp(1)} by alice "
        "(60 min before this check)"
    )


def test_a_retrain_the_gate_rejected_is_not_asked_for_again(spec: ModelSpec) -> None:
    found = drift(DRIFTED, None, reference=4)
    checks = [asked(30, 4, ["age", "income"]), past(1)]
    d = policy.apply_policy(
        spec, found, stored(checks), None, AT, "mon-x", answers={"c1": [(5, "rejected")]}
    )
    assert d.decision == policy.ESCALATE
    assert d.reasons[0].startswith(
        f"the retrain requested at {stamp(30)} on the same evidence produced v5 (rejected by "
        "its gate); v4 is in production, and it drifts the same way"
    )
    assert d.reasons[0].endswith("retraining on this data again would not fix it")
    # A retrain still running (no version yet) is not a failure: the cooldown decides.
    d = policy.apply_policy(spec, found, stored(checks), None, AT, "mon-x", answers={})
    assert d.decision == RETRAIN


def test_other_evidence_still_retrains_and_an_escalation_holds(spec: ModelSpec) -> None:
    checks = [asked(30, 4, ["performance"]), past(1) | {"reference_version": 5}]
    # New evidence (a covariate shift in the batches) after a performance retrain: retrain.
    d = decide(spec, drift(DRIFTED, None, reference=5), checks)
    assert d.decision == RETRAIN
    # Once escalated, the same evidence waits for a person (no second escalation event).
    escalated = {**asked(2, 5, ["performance"], "c2"), "decision": policy.ESCALATE}
    d = decide(spec, drift(CALM, PERF_DROP, reference=5), [*checks, escalated])
    assert d.decision == NO_RETRAIN and d.blocked_by == "escalation"
    assert d.reasons[0].startswith("escalated: this evidence was raised for a person")


def test_an_escalation_is_audited(store: ArtifactStore, spec: ModelSpec) -> None:
    found = drift(CALM, PERF_DROP, reference=5)
    d = decide(spec, found, [asked(30, 4, ["performance"]), past(1) | {"reference_version": 5}])
    record = policy.record_check(store, "m", d, found)
    assert record["decision"] == policy.ESCALATE and record["evidence"] == ["performance"]
    (event,) = Registry(store).audit("m", "escalate")
    assert event["actor"] == "monitor" and event["details"]["evidence"] == ["performance"]
    assert Registry(store).audit("m", "retrain_request") == []


def measured(metric: str, baseline: float, current: float) -> PerformanceDrift:
    return PerformanceDrift(
        True, metric, 400, f"performance: {metric}", current, baseline, None, 0.04
    )


@pytest.mark.parametrize(
    ("perf", "words"),
    [
        pytest.param(
            measured("log_loss", 0.41, 0.46),
            "log_loss rose from 0.4100 to 0.4600, worse by 0.0500, allowed 0.04",
            id="lower-is-better-rose",
        ),
        pytest.param(
            measured("roc_auc", 0.79, 0.61),
            "roc_auc fell from 0.7900 to 0.6100, worse by 0.1800, allowed 0.04",
            id="higher-is-better-fell",
        ),
    ],
)
def test_a_performance_retrain_says_which_way_the_metric_went(
    spec: ModelSpec, perf: PerformanceDrift, words: str
) -> None:
    """A log loss that rose was called "dropped"; now the reason says it rose, and is worse."""
    d = decide(spec, replace(drift(CALM, None), performance=perf), [past(1)])
    assert d.decision == RETRAIN
    assert d.reasons[0] == (
        f"performance ({words}) drifted for 2 consecutive check(s) and no cooldown applies"
    )


ONE_CLASS = PerformanceDrift(
    False,
    "roc_auc",
    400,
    "performance: metric undefined: the labelled window holds one class (all 1), so roc_auc "
    "cannot be computed on its 400 labelled rows; not checked",
    undefined="the labelled window holds one class (all 1)",
)


@pytest.mark.parametrize(
    ("data", "decision"),
    [
        pytest.param(CALM, NO_RETRAIN, id="calm-data-no-retrain"),
        pytest.param(DRIFTED, RETRAIN, id="drifted-data-still-retrains"),
    ],
)
def test_a_one_class_window_is_flagged_and_neither_triggers_nor_blocks(
    spec: ModelSpec, tmp_path: Path, data: dict[str, Any], decision: str
) -> None:
    from mlops_tasks.storage import LocalStore

    store = LocalStore(tmp_path / "store")
    found = replace(drift(data, None), performance=ONE_CLASS)
    d = decide(spec, found, [past(1)])
    assert d.decision == decision and d.blocked_by is None
    assert ONE_CLASS.summary in d.reasons
    record = policy.record_check(store, "m", d, found)
    assert record["performance"]["undefined"] == ONE_CLASS.undefined
    (stored_check,) = policy.history(store, "m")
    assert policy.check_flag(stored_check) == (
        "metric undefined: the labelled window holds one class (all 1)"
    )
    assert policy.check_flag(record | {"performance": None}) is None
