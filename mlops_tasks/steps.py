"""The body of every flow step: `(ctx, *upstream records) -> record`.

Each is a few lines that call the domain modules with what the run context holds. `flows.py`
declares which steps make a flow and how they connect; the in-process runner and the Airflow
DAG factory both execute these same functions.
"""

from __future__ import annotations

from datetime import date

from mlops_tasks import datasets, deployment, drift, evaluation, policy, training, validation
from mlops_tasks.context import RunContext
from mlops_tasks.errors import DataError, StepSkipped
from mlops_tasks.records import (
    Approval,
    Decision,
    Deployment,
    DriftResult,
    Evaluation,
    Reference,
    RetrainRequest,
    SnapshotRef,
    TrainedVersion,
    ValidationResult,
    Verification,
)
from mlops_tasks.registry import Registry
from mlops_tasks.service_client import ServiceClient
from mlops_tasks.traffic import read_traffic


# Retrain ------------------------------------------------------------------------------------
def _snapshot_window(ctx: RunContext, days: int | None) -> SnapshotRef:
    end: date = ctx.as_of.date()
    window = datasets.read_window(ctx.spec.data.source, ctx.store, end=end, days=days)
    snap = datasets.snapshot(
        window.frame,
        window.uris,
        ctx.store,
        model=ctx.model,
        schema_conflicts=window.conflicts,
    )
    start, last = window.start, window.end
    return SnapshotRef(
        hash=snap.hash,
        uri=snap.uri,
        rows=snap.rows,
        sources=len(window.uris),
        source="batches" if last else "table",
        start=start.isoformat() if start else None,
        end=last.isoformat() if last else None,
    )


def snapshot_data(ctx: RunContext) -> SnapshotRef:
    """Freeze the training window (the last N days of batches up to `as_of`) as a snapshot."""
    days = ctx.params.training_window_days or ctx.spec.data.training_window_days
    return _snapshot_window(ctx, days)


def _reference(ctx: RunContext, registry: Registry) -> Reference | None:
    production = registry.production(ctx.model)
    if production is None:
        return None
    return Reference(
        version=production.version, hash=production.dataset.train, metrics=production.metrics
    )


def validate_data(ctx: RunContext, snapshot: SnapshotRef) -> ValidationResult:
    """The spec's suite on the training window, learning ranges from production's data."""
    reference = _reference(ctx, Registry(ctx.store))
    hashes = [snapshot.hash, *([reference.hash] if reference else [])]
    frames = datasets.load_snapshots(hashes, ctx.store)
    conflicts = datasets.snapshot_metadata(snapshot.hash, ctx.store).get("schema_conflicts")
    return validation.validate(
        ctx.spec,
        frames[snapshot.hash],
        ctx.run_id,
        ctx.store,
        reference=frames[reference.hash] if reference else None,
        dataset_hash=snapshot.hash,
        schema_conflicts=conflicts or [],
    )


def train_candidate(
    ctx: RunContext, snapshot: SnapshotRef, _validation: ValidationResult
) -> TrainedVersion:
    spec = ctx.spec
    if ctx.params.hyperparameters:
        spec = spec.with_params(ctx.params.hyperparameters)
    return training.train_candidate(
        spec, snapshot.hash, ctx.trigger, ctx.run_id, ctx.store, ctx.settings.code_version
    )


def evaluate_candidate(ctx: RunContext, trained: TrainedVersion) -> Evaluation:
    return evaluation.evaluate_candidate(
        ctx.spec, trained.version, ctx.run_id, ctx.store, force_deploy=ctx.params.force_deploy
    )


def gate(ctx: RunContext, evaluated: Evaluation) -> Evaluation:
    """Reject the candidate and fail the run when it did not pass (its evidence is stored)."""
    return evaluation.enforce_gate(ctx.spec, evaluated, ctx.store, actor=ctx.trigger.actor)


def deploy(
    ctx: RunContext, trained: TrainedVersion, _gate: Evaluation, approval: Approval | None
) -> Deployment:
    actor = approval.by if approval and approval.by else None
    return deployment.deploy(
        ctx.spec, trained.version, ctx.trigger, ctx.run_id, ctx.store, actor=actor, as_of=ctx.as_of
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
    return deployment.verify_deployment(ctx.spec, deployed, snapshot.hash, ctx.store, check)


# Monitor ------------------------------------------------------------------------------------
def load_reference(ctx: RunContext) -> Reference:
    """Production's version and training snapshot; skips the run when there is none yet."""
    reference = _reference(ctx, Registry(ctx.store))
    if reference is None:
        raise StepSkipped(
            f"{ctx.model} has no production version to monitor yet; run a retrain first",
            model=ctx.model,
        )
    return reference


def load_current(ctx: RunContext) -> SnapshotRef:
    """The current window, frozen as a snapshot: logged traffic or the newest batches.

    With `drift.current_source: auto`, the last `drift.window_days` of the inference log (joined
    with the labels that arrived) when it holds at least `drift.min_rows` rows, else batches.
    """
    spec = ctx.spec
    source = spec.drift.current_source
    if source in ("auto", "inference"):
        traffic = read_traffic(
            ctx.store, spec.name, spec.drift.window_days, target=spec.target, as_of=ctx.as_of
        )
        if source == "inference" or len(traffic) >= spec.drift.min_rows:
            if traffic.empty:
                raise DataError(
                    f"{spec.name}: no logged predictions in the {spec.drift.window_days} day(s) "
                    f"up to {ctx.as_of:%Y-%m-%d}",
                    model=spec.name,
                )
            sources = [ctx.store.uri_for(f"inference/{spec.name}")]
            snap = datasets.snapshot(traffic, sources, ctx.store, "inference", model=spec.name)
            labelled = int(traffic[spec.target].notna().sum()) if spec.target in traffic else 0
            return SnapshotRef(
                hash=snap.hash,
                uri=snap.uri,
                rows=snap.rows,
                sources=1,
                source="inference",
                labelled_rows=labelled,
            )
    return _snapshot_window(ctx, spec.drift.window_days)


def validate_current(
    ctx: RunContext, reference: Reference, current: SnapshotRef
) -> ValidationResult:
    """The current window against production's data (features only for traffic)."""
    conflicts = datasets.snapshot_metadata(current.hash, ctx.store).get("schema_conflicts")
    frames = datasets.load_snapshots([current.hash, reference.hash], ctx.store)
    return validation.validate(
        ctx.spec,
        frames[current.hash],
        ctx.run_id,
        ctx.store,
        reference=frames[reference.hash],
        name="validation-current",
        dataset_hash=current.hash,
        serving=current.source == "inference",
        schema_conflicts=conflicts or [],
    )


def detect_drift(
    ctx: RunContext, reference: Reference, current: SnapshotRef, _valid: ValidationResult
) -> DriftResult:
    return drift.detect_drift(ctx.spec, reference, current.hash, ctx.run_id, ctx.store)


def decide(ctx: RunContext, drifted: DriftResult) -> Decision:
    """Apply the retrain policy to the drift result and record the check; of concurrent
    monitors deciding to retrain, only one keeps the decision (a conditional write)."""
    doc = Registry(ctx.store).alias_doc(ctx.model)
    decision = policy.apply_policy(
        ctx.spec,
        drifted,
        policy.history(ctx.store, ctx.model, limit=50),
        deployment.promoted_as_of(doc),
        ctx.as_of,
        ctx.run_id,
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
