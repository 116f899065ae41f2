"""The body of every flow step: `(ctx, *upstream records) -> record`.

Each is a few lines that call the domain modules with what the run context holds. `flows.py`
declares which steps make a flow and how they connect; the in-process runner and the Airflow
DAG factory both execute these same functions.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import TYPE_CHECKING

from mlops_tasks.data import datasets, validation, windows
from mlops_tasks.errors import DataError, StepSkipped, UsageError
from mlops_tasks.flow.context import RunContext
from mlops_tasks.model import deployment, evaluation, external, training
from mlops_tasks.monitor import drift, policy
from mlops_tasks.records import (
    Approval,
    Decision,
    Deployment,
    DriftResult,
    Evaluation,
    ProductionChange,
    Reference,
    RetrainRequest,
    SnapshotRef,
    TrainedVersion,
    ValidationResult,
    Verification,
)
from mlops_tasks.registry import Registry
from mlops_tasks.service_client import ServiceClient

if TYPE_CHECKING:
    pass

log = logging.getLogger(__name__)


# Retrain ------------------------------------------------------------------------------------
def snapshot_data(ctx: RunContext) -> SnapshotRef:
    """Freeze the training window (the last N days of batches up to `as_of`, clean batches
    only, plus labelled traffic with `data.include_feedback`) as a snapshot."""
    days = ctx.params.training_window_days or ctx.spec.data.training_window_days
    return windows.batch_window(ctx, days, feedback=ctx.spec.data.include_feedback)


def _reference(ctx: RunContext, registry: Registry) -> Reference | None:
    production = registry.production(ctx.model)
    if production is None:
        return None
    return Reference(
        version=production.version, hash=production.dataset.train, metrics=production.metrics
    )


def validate_data(ctx: RunContext, snapshot: SnapshotRef) -> ValidationResult:
    """The declared contract on the training window's batches (blocking) and what production's
    data looked like (warnings). Labelled traffic added with `include_feedback` (the last
    `traffic_rows` rows) was checked when it was served and labelled: its id and time columns
    are the service's, so the batch contract's rules for them do not apply."""
    reference = _reference(ctx, Registry(ctx.store))
    hashes = [snapshot.hash, *([reference.hash] if reference else [])]
    frames = datasets.load_snapshots(hashes, ctx.store)
    conflicts = datasets.snapshot_metadata(snapshot.hash, ctx.store).get("schema_conflicts")
    window = frames[snapshot.hash]
    if snapshot.traffic_rows:
        window = window.iloc[: len(window) - snapshot.traffic_rows]
    return validation.validate(
        ctx.spec,
        window,
        ctx.run_id,
        ctx.store,
        reference=frames[reference.hash] if reference else None,
        dataset_hash=snapshot.hash,
        schema_conflicts=conflicts or [],
        quarantined=list(snapshot.quarantined),
    )


def train_candidate(ctx: RunContext, snapshot: SnapshotRef) -> TrainedVersion:
    """Fit the candidate on the snapshot (after its validation passed) and register it."""
    spec = ctx.spec
    if ctx.params.hyperparameters:
        spec = spec.with_params(ctx.params.hyperparameters)
    return training.train_candidate(
        spec,
        snapshot.hash,
        ctx.trigger,
        ctx.run_id,
        ctx.store,
        ctx.settings.code_version,
        threads=ctx.settings.train_threads,
    )


def bring_candidate(ctx: RunContext, snapshot: SnapshotRef) -> TrainedVersion:
    """Check the model a person brought (`mlops register`), score it on the snapshot's
    holdout (after its validation passed) and register it, instead of training one."""
    if ctx.params.artifact is None:
        raise UsageError(f"{ctx.model}: no model file was brought to register", model=ctx.model)
    return external.register_external(
        ctx.spec,
        snapshot.hash,
        ctx.params.artifact,
        ctx.trigger,
        ctx.run_id,
        ctx.store,
        ctx.settings.code_version,
    )


def evaluate_candidate(ctx: RunContext, trained: TrainedVersion) -> Evaluation:
    return evaluation.evaluate_candidate(
        ctx.spec, trained.version, ctx.run_id, ctx.store, force_deploy=ctx.params.force_deploy
    )


def gate(ctx: RunContext, evaluated: Evaluation) -> Evaluation:
    """Reject the candidate and fail the run when it did not pass (its evidence is stored)."""
    return evaluation.enforce_gate(ctx.spec, evaluated, ctx.store, actor=ctx.trigger.actor)


def deploy(ctx: RunContext, trained: TrainedVersion, approval: Approval | None) -> Deployment:
    """Promote the candidate (after its gate passed, and a person approved it where the spec
    asks for that)."""
    return deployment.deploy(
        ctx.spec,
        trained.version,
        ctx.trigger,
        ctx.run_id,
        ctx.store,
        approval=approval,
        as_of=ctx.as_of,
    )


def verify_deployment(ctx: RunContext, deployed: Deployment, snapshot: SnapshotRef) -> Verification:
    """Score a sample with production; when a prediction service is configured, it must
    answer with the new version too. Any failure rolls production back."""
    check = None
    settings = ctx.settings
    if settings.serving_url:
        client = ServiceClient(
            settings.serving_url, settings.serving_token, api_token=settings.serving_client_token
        )
        check = client.verify_serving
    return deployment.verify_deployment(
        ctx.spec, deployed, snapshot.hash, ctx.store, check, as_of=ctx.as_of
    )


# Monitor ------------------------------------------------------------------------------------
def load_reference(ctx: RunContext) -> Reference:
    """Production's version, and what the current window is compared with: its training
    snapshot, or the window of batches before the current one that `drift.reference` names
    (read as of the run). Skips the run when there is no production version yet."""
    reference = _reference(ctx, Registry(ctx.store))
    if reference is None:
        raise StepSkipped(
            f"{ctx.model} has no production version to monitor yet; run a retrain first",
            model=ctx.model,
        )
    if ctx.spec.drift.reference == "training":
        return reference
    return windows.reference_window(ctx, reference)


def load_current(ctx: RunContext) -> SnapshotRef:
    """The current window, frozen as a snapshot: the newest batches and the logged traffic.

    `drift.current_source: auto` checks both: the batches of the last `drift.window_days`, and
    beside them the inference log of those days (joined with the labels that arrived) when it
    holds at least `drift.min_rows` rows, so neither hides a shift in the other. Traffic alone
    is the window when there are no batches in it, or with `current_source: inference`.
    """
    spec = ctx.spec
    source = spec.drift.current_source
    traffic = None
    if source in ("auto", "inference"):
        traffic = windows.traffic_window(ctx, required=source == "inference")
    if source == "inference":
        assert traffic is not None
        return traffic
    try:
        batches = windows.batch_window(ctx, spec.drift.window_days)
    except DataError:
        if traffic is None:
            raise
        log.warning("%s: no clean batches in the window; monitoring traffic only", ctx.model)
        return traffic
    if traffic is None:
        return batches
    return replace(
        batches,
        traffic_hash=traffic.hash,
        traffic_rows=traffic.rows,
        labelled_rows=traffic.labelled_rows,
    )


def validate_current(
    ctx: RunContext, reference: Reference, current: SnapshotRef
) -> ValidationResult:
    """The current window against the declared contract (features only for traffic).

    What production's data looked like (learned ranges and categories) is not checked here:
    a window that left it is drift evidence, which `detect_drift` reports.
    """
    conflicts = datasets.snapshot_metadata(current.hash, ctx.store).get("schema_conflicts")
    frame = datasets.load_snapshot(current.hash, ctx.store)
    return validation.validate(
        ctx.spec,
        frame,
        ctx.run_id,
        ctx.store,
        name="validation-current",
        dataset_hash=current.hash,
        serving=current.source == "inference",
        schema_conflicts=conflicts or [],
        quarantined=list(current.quarantined),
        row_bounds=False,
    )


def detect_drift(ctx: RunContext, reference: Reference, current: SnapshotRef) -> DriftResult:
    """Compare the current window with the reference (after the window's validation)."""
    return drift.detect_drift(
        ctx.spec,
        reference,
        current.hash,
        ctx.run_id,
        ctx.store,
        traffic_hash=current.traffic_hash,
        as_of=ctx.as_of,
    )


def decide(ctx: RunContext, drifted: DriftResult) -> Decision:
    """Apply the retrain policy to the drift result and record the check; of concurrent
    monitors deciding to retrain, only one keeps the decision (a conditional write)."""
    registry = Registry(ctx.store)
    decision = policy.apply_policy(
        ctx.spec,
        drifted,
        policy.checks(ctx.store, ctx.model, limit=50),
        policy.production_move(registry.production_alias(ctx.model)),
        ctx.as_of,
        ctx.run_id,
        answers=policy.retrain_answers(registry, ctx.model) if drifted.detected else None,
    )
    settled, _ = policy.record_decision(
        ctx.store, ctx.model, decision, drifted, ctx.spec.drift.cooldown_hours
    )
    return settled


def request_retrain(ctx: RunContext, decision: Decision) -> RetrainRequest:
    """The retrain request a `retrain` decision emits; skips otherwise."""
    if decision.decision != policy.RETRAIN:
        raise StepSkipped(f"no retrain: {decision.reason}", model=ctx.model)
    return decision.retrain_request(ctx.model)


# Change production --------------------------------------------------------------------------
def change_production(ctx: RunContext) -> ProductionChange:
    """Promote or roll back as the run's Params ask, audited with who triggered it and why."""
    request = ctx.params.change
    if request is None:
        raise UsageError(f"{ctx.model}: no change of production was asked for", model=ctx.model)
    return deployment.change_production(
        Registry(ctx.store),
        ctx.model,
        request.action,
        request.version,
        request.reason,
        ctx.trigger.actor,
        as_of=ctx.as_of,
    )
