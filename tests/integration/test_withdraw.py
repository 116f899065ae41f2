"""A first version that fails its deployment verification is not left in production: with
nothing before it to roll back to, it is withdrawn (production empty), audited, and the
registry's own verification agrees with the audit trail. A later good version is promoted as
a first one again; a rollback never returns to the withdrawn version."""

from __future__ import annotations

from pathlib import Path

import pytest

from mlops_tasks.data import synthetic
from mlops_tasks.errors import DeploymentError
from mlops_tasks.flow.flows import TRAIN
from mlops_tasks.registry import Registry
from mlops_tasks.settings import Settings
from mlops_tasks.specs import find_spec
from mlops_tasks.storage import LocalStore
from tests.conftest import REPO, free_port
from tests.flowkit import retrain

pytestmark = [pytest.mark.integration]

MODEL = "credit_default"


def test_a_first_version_failing_verification_is_withdrawn_and_audited(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "store")
    synthetic.write_batches(days=3, rows_per_day=800, store=store)
    spec = find_spec(MODEL, REPO / "dags" / "specs")
    # Deploy verification asks a prediction service that is not there.
    dead = Settings.from_env(
        {"MLOPS_STORE": store.uri, "MLOPS_SERVING_URL": f"http://127.0.0.1:{free_port()}"}
    )
    with pytest.raises(DeploymentError, match="withdrawn from production") as err:
        retrain(spec, store, settings=dead)
    assert "v1 failed deployment verification" in str(err.value)
    registry = Registry(store)
    assert registry.alias(MODEL) is None  # not left in production
    withdrawn = registry.audit(MODEL, action="withdraw")
    assert len(withdrawn) == 1
    event = withdrawn[0]
    assert event["from_version"] == 1 and event["to_version"] is None
    assert event["actor"] == "verify_deployment" and "failed deployment" in event["reason"]
    assert registry.verify(MODEL).ok, registry.verify(MODEL)
    # A good second version becomes production on its own; rolling back finds nothing to go to.
    run = retrain(spec, store)
    assert registry.alias(MODEL) == int(run[TRAIN].version) == 2
    assert registry.rollback_target(MODEL) is None
    assert registry.verify(MODEL).ok
