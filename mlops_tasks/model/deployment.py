"""Putting a version into production, proving it serves, and moving production by hand.

A move a run makes (a retrain's promotion, the rollback of its failed verification, a
change-production run) records the run's logical time as `details.as_of` in its audit event;
the promotion cooldown counts from it (`policy.production_since`). A move by hand has none.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any

from mlops_tasks.data.datasets import load_snapshot
from mlops_tasks.errors import DeploymentError, MlopsError, UsageError
from mlops_tasks.model.modelling import prepare_features
from mlops_tasks.records import (
    Approval,
    Deployment,
    ProductionChange,
    Trigger,
    Verification,
    to_json,
)
from mlops_tasks.registry import MIN_REASON, Registry
from mlops_tasks.specs import ModelSpec
from mlops_tasks.storage import ArtifactStore

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)

#: An extra check of a deployed version: (spec, version, sample rows) -> raises on failure.
ServingCheck = Callable[[ModelSpec, int, "pd.DataFrame"], Any]


def _logical(as_of: datetime | None) -> dict[str, Any] | None:
    """The audit details that say a move was made as of a run's logical time."""
    return {"as_of": as_of.isoformat()} if as_of is not None else None


def deploy(
    spec: ModelSpec,
    version: int,
    trigger: Trigger,
    run_id: str,
    store: ArtifactStore,
    approval: Approval | None = None,
    as_of: datetime | None = None,
) -> Deployment:
    """Promote the version to production (audited with the trigger, the run, the person who
    approved it and their comment, and, given `as_of`, the run's logical time, which the
    promotion cooldown counts from)."""
    reason = (
        f"model trained elsewhere, brought by {trigger.actor}, passed its gate"
        if trigger.kind == "external"
        else f"{trigger.kind} retrain passed its gate"
    )
    given = (trigger.reason or "").strip()
    if len(given) >= MIN_REASON:  # a trigger's reason is optional: never fail a deploy on it
        reason = given
    elif given:
        reason = f"{reason} ({given})"
    details: dict[str, Any] = {"run_id": run_id, "triggered_by": to_json(trigger)}
    details |= _logical(as_of) or {}
    actor = trigger.actor
    if approval is not None:
        details["approval"] = {"approved_by": approval.by, "comment": approval.comment}
        actor = approval.by or actor
        if approval.comment:
            reason = f"{reason}; approved: {approval.comment}"
    res = Registry(store).promote(spec.name, version, reason=reason, actor=actor, details=details)
    return Deployment(spec.name, version, res.previous, res.changed)


def verify_deployment(
    spec: ModelSpec,
    deployed: Deployment,
    dataset_hash: str,
    store: ArtifactStore,
    check: ServingCheck | None = None,
    as_of: datetime | None = None,
) -> Verification:
    """Load production through the registry and score a sample; on any failure, roll back
    (a first version, with nothing before it, is withdrawn: production is left empty).

    `check` is an extra verification, e.g. that the prediction service answers the sample
    with this version; `as_of`, the run's logical time, is recorded with a rollback.
    """
    registry = Registry(store)
    version = deployed.version
    try:
        serving = registry.alias(spec.name)
        if serving != version:
            raise DeploymentError(f"production alias is v{serving}, expected v{version}")
        sample = load_snapshot(dataset_hash, store).tail(spec.deployment.verify_sample_rows)
        pred = registry.load(spec.name, version).predict(prepare_features(spec, sample))
        if len(pred) != len(sample):
            raise DeploymentError(f"scored {len(pred)} of {len(sample)} sample rows")
        if check is not None:
            check(spec, version, sample)
    except (MlopsError, ValueError) as err:
        msg = f"{spec.name} v{version} failed deployment verification: {err}"
        if registry.alias(spec.name) == version and deployed.previous is not None:
            registry.rollback(
                spec.name,
                to=deployed.previous,
                reason=msg,
                actor="verify_deployment",
                details=_logical(as_of),
            )
            msg += f"; production rolled back to v{deployed.previous}"
        elif registry.alias(spec.name) == version:  # a first version: nothing to go back to
            registry.withdraw(
                spec.name,
                version,
                reason=msg,
                actor="verify_deployment",
                details=_logical(as_of),
            )
            msg += "; withdrawn from production, which is now empty (nothing was before it)"
        raise DeploymentError(msg, model=spec.name, version=version) from err
    return Verification(spec.name, version, len(pred), served_by_service=check is not None)


def change_production(
    registry: Registry,
    model: str,
    action: str,
    version: int | None,
    reason: str,
    actor: str,
    expected: int | None = None,
    as_of: datetime | None = None,
) -> ProductionChange:
    """Promote `version` or roll back (to `version`, default the previous production).

    `expected` is the production version the person saw; if it moved since, nothing changes.
    `as_of` is the logical time of the run that asks (none for a change made by hand).
    """
    details = _logical(as_of)
    if action == "promote":
        if version is None:
            raise UsageError("promote needs a version", model=model)
        return registry.promote(
            model, version, reason=reason, actor=actor, expected=expected, details=details
        )
    if action == "rollback":
        return registry.rollback(
            model, to=version, reason=reason, actor=actor, expected=expected, details=details
        )
    raise UsageError(f"unknown action {action!r}: use promote or rollback", model=model)
