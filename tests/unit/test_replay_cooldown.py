"""Replaying history: the cooldown after a promotion counts in logical time (`as_of`).

A replay (`mlops run monitor --as-of`, an Airflow backfill) promotes a version as of a past
date. Counting the promotion cooldown from the wall clock of the promotion put every replayed
check before it, "within cooldown", so a replay could never ask for a retrain again.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from mlops_tasks.flow import steps
from mlops_tasks.flow.context import RunContext
from mlops_tasks.model import deployment
from mlops_tasks.monitor import policy
from mlops_tasks.records import Trigger
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
