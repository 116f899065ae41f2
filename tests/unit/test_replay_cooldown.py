"""Replaying history: the cooldown after a move of production counts in logical time (`as_of`).

A replay (`mlops run monitor --as-of`, an Airflow backfill) promotes a version as of a past
date. Counting the promotion cooldown from the wall clock of the promotion put every replayed
check before it, "within cooldown", so a replay could never ask for a retrain again. A rollback
by hand during a replay of 2013 has only today's wall-clock time: counted against the replayed
as_of it said "allowed again in 118,537.7 h".
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path

import pytest

from mlops_tasks.flow import steps
from mlops_tasks.flow.context import RunContext
from mlops_tasks.model import deployment
from mlops_tasks.monitor import policy
from mlops_tasks.records import Decision, Trigger
from mlops_tasks.registry import Registry
from mlops_tasks.settings import Settings
from mlops_tasks.specs import ModelSpec, load_spec
from mlops_tasks.storage import LocalStore
from tests.unit.test_policy import DRIFTED, drift
from tests.unit.test_registry import register_gated

SPEC_DIR = Path(__file__).resolve().parents[2] / "dags" / "specs"
PROMOTED = datetime(2011, 2, 28, tzinfo=UTC)


@pytest.fixture
def spec() -> ModelSpec:
    data = load_spec(SPEC_DIR / "credit_default.yaml").model_dump(mode="json")
    data["drift"] |= {"min_rows": 500, "consecutive_checks": 1, "cooldown_hours": 72.0}
    return ModelSpec.model_validate(data)


@pytest.fixture
def promoted(tmp_path: Path, spec: ModelSpec) -> LocalStore:
    """v1 promoted by a retrain run as of `PROMOTED` (the wall clock says today)."""
    store = LocalStore(tmp_path / "store")
    version = register_gated(Registry(store), spec.name)
    trigger = Trigger("schedule", reason="replayed retrain", run_id="retrain-1")
    deployment.deploy(spec, version, trigger, "retrain-1", store, as_of=PROMOTED)
    return store


def check(spec: ModelSpec, store: LocalStore, as_of: datetime) -> tuple[str, str | None]:
    ctx = RunContext.create(
        spec,
        store,
        Settings.from_env({"MLOPS_STORE": store.uri}),
        f"monitor-{as_of:%m%d}",
        Trigger("schedule", reason="replay"),
        as_of=as_of,
    )
    decision = steps.decide(ctx, drift(DRIFTED, None, reference=1))
    return decision.decision, decision.blocked_by


def test_the_promotion_records_the_logical_time_it_was_made_for(
    spec: ModelSpec, promoted: LocalStore
) -> None:
    alias = Registry(promoted).production_alias(spec.name)
    move = policy.production_move(alias)
    assert move is not None and move.at == PROMOTED.isoformat()
    assert alias is not None and alias.since is not None
    assert alias.since > PROMOTED.isoformat()  # the wall clock


@pytest.mark.parametrize(
    ("as_of", "expected"),
    [
        pytest.param(datetime(2011, 3, 2, tzinfo=UTC), ("no_retrain", "promotion"), id="48h-on"),
        pytest.param(datetime(2011, 3, 4, tzinfo=UTC), ("retrain", None), id="96h-on"),
    ],
)
def test_a_replayed_check_counts_the_cooldown_from_the_replayed_promotion(
    spec: ModelSpec, promoted: LocalStore, as_of: datetime, expected: tuple[str, str | None]
) -> None:
    assert check(spec, promoted, as_of) == expected


def test_a_promotion_by_hand_still_counts_from_when_it_happened(
    spec: ModelSpec, tmp_path: Path
) -> None:
    store = LocalStore(tmp_path / "store")
    registry = Registry(store)
    registry.promote(spec.name, register_gated(registry, spec.name), reason="by hand", actor="a")
    alias = registry.production_alias(spec.name)
    move = policy.production_move(alias)
    assert alias is not None and move is not None and move.at == alias.since
    assert check(spec, store, datetime.now(UTC)) == ("no_retrain", "promotion")


def decided(spec: ModelSpec, store: LocalStore, as_of: datetime) -> Decision:
    ctx = RunContext.create(
        spec,
        store,
        Settings.from_env({"MLOPS_STORE": store.uri}),
        f"monitor-{as_of:%Y%m%d}",
        Trigger("schedule", reason="replay"),
        as_of=as_of,
    )
    return steps.decide(ctx, drift(DRIFTED, None, reference=1))


def hours_in(reason: str) -> list[float]:
    """Every span a reason names, in hours."""
    spans = re.findall(r"(\d[\d.,]*) (h|min)\b", reason)
    return [float(n.replace(",", "")) / (60 if unit == "min" else 1) for n, unit in spans]


@pytest.fixture
def rolled_back_by_hand(tmp_path: Path, spec: ModelSpec) -> LocalStore:
    """A replay of 2013: v1 promoted as of 2013-01-10, v2 as of 2013-02-01, then a person rolls
    back to v1 with `mlops rollback` (the wall clock says today, years after the replay)."""
    store = LocalStore(tmp_path / "store")
    registry = Registry(store)
    for seed, as_of in enumerate(
        (datetime(2013, 1, 10, tzinfo=UTC), datetime(2013, 2, 1, tzinfo=UTC))
    ):
        version = register_gated(registry, spec.name, seed)
        trigger = Trigger("schedule", reason="replayed retrain", run_id=f"retrain-{seed}")
        deployment.deploy(spec, version, trigger, f"retrain-{seed}", store, as_of=as_of)
    registry.rollback(spec.name, reason="v2 misbehaves", actor="alice")
    return store


def test_a_replay_counts_a_rollback_by_hand_from_the_first_check_that_saw_it(
    spec: ModelSpec, rolled_back_by_hand: LocalStore
) -> None:
    """The rollback has no logical time; the replay places it at its first check after it and
    counts the cooldown (72 h) in replayed time, never against today's wall clock."""
    first = decided(spec, rolled_back_by_hand, datetime(2013, 2, 10, tzinfo=UTC))
    assert (first.decision, first.blocked_by) == ("no_retrain", "promotion")
    assert "v1 is in production by rollback from v2" in first.reasons[0]
    assert (
        "by alice, made by hand after this check's as_of: counted from 2013-02-10 00:00 UTC, "
        "the as_of of the first check that saw it (0 min before this check)"
    ) in first.reasons[0]
    assert (
        "retraining is allowed again from 2013-02-13 00:00 UTC (72.0 h later)" in first.reasons[0]
    )
    second = decided(spec, rolled_back_by_hand, datetime(2013, 2, 12, tzinfo=UTC))
    assert second.blocked_by == "promotion"
    assert "allowed again from 2013-02-13 00:00 UTC (24.0 h later)" in second.reasons[0]
    for d in (first, second):
        assert max(hours_in(d.reasons[0])) <= spec.drift.cooldown_hours
    after = decided(spec, rolled_back_by_hand, datetime(2013, 2, 13, 1, tzinfo=UTC))
    assert (after.decision, after.blocked_by) == ("retrain", None)


def test_moves_a_run_makes_record_its_logical_time(spec: ModelSpec, promoted: LocalStore) -> None:
    """The rollback of a failed verification and a change-production run are moves of a run:
    a replay counts their cooldown from the run's as_of, as it does a promotion's."""
    from mlops_tasks.errors import DeploymentError
    from mlops_tasks.records import Deployment
    from tests.unit.test_registry import snapshot_hash

    registry = Registry(promoted)
    v2 = register_gated(registry, spec.name, seed=1)
    failed_at = datetime(2011, 3, 10, tzinfo=UTC)
    trigger = Trigger("schedule", reason="replayed retrain", run_id="retrain-2")
    deployed = deployment.deploy(spec, v2, trigger, "retrain-2", promoted, as_of=failed_at)
    assert deployed == Deployment(spec.name, v2, 1, True)

    def refuse(*_: object) -> None:
        raise DeploymentError("the service answers with v1")

    with pytest.raises(DeploymentError, match="production rolled back to v1"):
        deployment.verify_deployment(
            spec, deployed, snapshot_hash(), promoted, refuse, as_of=failed_at
        )
    move = policy.production_move(registry.production_alias(spec.name))
    assert move is not None and (move.action, move.version) == ("rollback", 1)
    assert (move.at, move.logical) == (failed_at.isoformat(), True)
    changed_at = datetime(2011, 4, 1, tzinfo=UTC)
    deployment.change_production(
        registry, spec.name, "promote", v2, "replayed by a run", "alice", as_of=changed_at
    )
    move = policy.production_move(registry.production_alias(spec.name))
    assert move is not None and (move.at, move.logical) == (changed_at.isoformat(), True)
    by_hand = deployment.change_production(registry, spec.name, "rollback", 1, "by hand", "bob")
    assert by_hand.changed
    move = policy.production_move(registry.production_alias(spec.name))
    assert move is not None and move.logical is False
