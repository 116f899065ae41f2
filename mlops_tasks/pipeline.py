"""The retrain and monitor loops as plain Python: each step is the body of one Airflow task.

Every step takes the spec plus small JSON inputs (URIs, hashes, versions) and returns small JSON,
so the same functions run from the CLI (`mlops run ...`, `mlops demo`) and inside Airflow tasks.
"""

from __future__ import annotations

import logging
import os
from datetime import UTC, date, datetime, timedelta
from typing import Any

from mlops_tasks import policy
from mlops_tasks.datasets import (
    batch_dates,
    load_snapshot,
    read_batches,
    snapshot,
    snapshot_metadata,
)
from mlops_tasks.errors import DataError, DeploymentError, MlopsError, NotFoundError
from mlops_tasks.registry import Registry, trigger_actor
from mlops_tasks.specs import ModelSpec
from mlops_tasks.storage import ArtifactStore, open_store

log = logging.getLogger(__name__)


def new_run_id(kind: str) -> str:
    return f"{kind}__{datetime.now(UTC).strftime('%Y-%m-%dT%H%M%S.%fZ')}"


def trigger_info(
    kind: str,
    user: str | None = None,
    reason: str = "",
    run_id: str | None = None,
    drift: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Who or what started a retrain: `schedule`, `manual`, `drift` or `cli`."""
    return {"kind": kind, "user": user, "reason": reason, "run_id": run_id, "drift": drift}


# Retrain ------------------------------------------------------------------------------------
def snapshot_data(
    spec: ModelSpec,
    end: date | None = None,
    window_days: int | None = None,
    store: ArtifactStore | None = None,
) -> dict[str, Any]:
    """Freeze the training window (the last N days of batches up to `end`) as a snapshot."""
    st = store or open_store()
    window = window_days or spec.data.training_window_days
    start = None
    source = spec.data.source
    # A single table has no dated batches, so it is read whole.
    dates = [d for d in batch_dates(source, st) if end is None or d <= end]
    if dates and window:
        end = dates[-1]
        start = end - timedelta(days=window - 1)
    df, uris, conflicts = read_batches(source, st, start=start, end=end)
    snap = snapshot(df, uris, st, model=spec.name, schema_conflicts=conflicts)
    return {**{k: snap[k] for k in ("hash", "uri", "rows")}, "sources": len(uris),
            "start": start.isoformat() if start else None,
            "end": end.isoformat() if end else None}  # fmt: skip


def reference_snapshot(spec: ModelSpec, store: ArtifactStore | None = None) -> str | None:
    """The training snapshot of the production version (the drift and validation reference)."""
    try:
        return str(load_reference(spec, store)["hash"])
    except NotFoundError:
        return None


def validate_data(
    spec: ModelSpec,
    dataset_hash: str,
    run_id: str,
    reference_hash: str | None = None,
    store: ArtifactStore | None = None,
    name: str = "validation",
    serving: bool = False,
) -> dict[str, Any]:
    """Great Expectations suite from the spec; raises DataValidationError after storing evidence.

    The reference defaults to production's training snapshot; `serving=True` checks a window
    of logged traffic (features only).
    """
    from mlops_tasks.validation import validate

    st = store or open_store()
    reference_hash = reference_hash or reference_snapshot(spec, st)
    reference = load_snapshot(reference_hash, st) if reference_hash else None
    conflicts = snapshot_metadata(dataset_hash, st).get("schema_conflicts") or []
    return validate(spec, load_snapshot(dataset_hash, st), run_id, reference=reference,
                    store=st, name=name, dataset_hash=dataset_hash,
                    schema_conflicts=conflicts, serving=serving)  # fmt: skip


def deploy(
    spec: ModelSpec,
    version: int,
    triggered_by: dict[str, Any],
    run_id: str,
    actor: str | None = None,
    store: ArtifactStore | None = None,
) -> dict[str, Any]:
    """Promote the version to production (audited with the trigger and the run)."""
    reg = Registry(store or open_store())
    reason = triggered_by.get("reason") or f"{triggered_by['kind']} retrain passed its gate"
    res = reg.promote(spec.name, version, reason=reason,
                      actor=actor or trigger_actor(triggered_by),
                      details={"run_id": run_id, "triggered_by": triggered_by})  # fmt: skip
    return {"model": spec.name, "version": version, "previous": res.get("previous"),
            "changed": res["changed"]}  # fmt: skip


def verify_deployment(
    spec: ModelSpec,
    version: int,
    previous: int | None,
    dataset_hash: str,
    store: ArtifactStore | None = None,
    check: Any = None,
) -> dict[str, Any]:
    """Load production through the registry and score a sample; roll back on any failure.

    `check(spec, version, sample)` is an extra verification; by default, when
    `MLOPS_SERVING_URL` is set, the prediction service is asked to reload and must answer the
    sample with this version.
    """
    from mlops_tasks.training import prepare_features

    st = store or open_store()
    reg = Registry(st)
    if check is None and (url := os.environ.get("MLOPS_SERVING_URL")):
        from mlops_tasks.serving.client import ServiceClient

        client = ServiceClient(url, os.environ.get("MLOPS_SERVING_TOKEN"))
        check = client.verify_serving
    try:
        serving = reg.alias(spec.name)
        if serving != version:
            raise DeploymentError(f"production alias is v{serving}, expected v{version}")
        sample = load_snapshot(dataset_hash, st).tail(spec.deployment.verify_sample_rows)
        pred = reg.load(spec.name).predict(prepare_features(spec, sample))
        if len(pred) != len(sample):
            raise DeploymentError(f"scored {len(pred)} of {len(sample)} sample rows")
        if check is not None:
            check(spec, version, sample)
    except (MlopsError, ValueError) as err:
        msg = f"{spec.name} v{version} failed deployment verification: {err}"
        if previous is not None and reg.alias(spec.name) == version:
            reg.rollback(spec.name, to=previous, reason=msg, actor="verify_deployment")
            msg += f"; production rolled back to v{previous}"
        raise DeploymentError(msg, model=spec.name, version=version) from err
    return {"model": spec.name, "version": version, "verified_rows": len(pred)}


def run_retrain(
    spec: ModelSpec,
    triggered_by: dict[str, Any],
    store: ArtifactStore | None = None,
    run_id: str | None = None,
    force_deploy: bool = False,
    params: dict[str, Any] | None = None,
    window_days: int | None = None,
) -> dict[str, Any]:
    """snapshot → validate → train → evaluate → gate → deploy → verify, in one process."""
    from mlops_tasks.evaluation import enforce_gate, evaluate_candidate
    from mlops_tasks.training import train_candidate

    st = store or open_store()
    run_id = run_id or new_run_id("retrain")
    triggered_by = {**triggered_by, "run_id": run_id}
    snap = snapshot_data(spec, window_days=window_days, store=st)
    validation = validate_data(spec, snap["hash"], run_id, store=st)
    trained = train_candidate(spec, snap["hash"], triggered_by, run_id=run_id, params=params,
                              store=st)  # fmt: skip
    evaluation = evaluate_candidate(spec, trained["version"], run_id, force_deploy, store=st)
    enforce_gate(spec, evaluation, store=st)
    if spec.deployment.approval == "manual":
        log.info("%s v%d passed; approval is manual, not deploying", spec.name, trained["version"])
        return {"run_id": run_id, "snapshot": snap, "validation": validation, "trained": trained,
                "evaluation": evaluation, "deployed": None}  # fmt: skip
    deployed = deploy(spec, trained["version"], triggered_by, run_id, store=st)
    verify_deployment(spec, trained["version"], deployed["previous"], snap["hash"], store=st)
    return {"run_id": run_id, "snapshot": snap, "validation": validation, "trained": trained,
            "evaluation": evaluation, "deployed": deployed}  # fmt: skip


# Monitor ------------------------------------------------------------------------------------
def load_reference(spec: ModelSpec, store: ArtifactStore | None = None) -> dict[str, Any]:
    reg = Registry(store or open_store())
    version = reg.alias(spec.name)
    if version is None:
        raise NotFoundError(f"{spec.name} has no production version to monitor yet; run a "
                            "retrain first", model=spec.name)  # fmt: skip
    meta = reg.get_version(spec.name, version)
    return {"version": version, "hash": meta["dataset"]["train"],
            "metrics": meta.get("metrics", {})}  # fmt: skip


def load_current(
    spec: ModelSpec, end: date | None = None, store: ArtifactStore | None = None
) -> dict[str, Any]:
    """The current window, frozen as a snapshot: logged traffic or the newest batches.

    With `drift.current_source: auto`, the last `drift.window_days` of the inference log (joined
    with the labels that arrived) when it holds at least `drift.min_rows` rows, else batches.
    """
    from mlops_tasks.serving.inference_log import read_inference

    st = store or open_store()
    source = spec.drift.current_source
    if source in ("auto", "inference"):
        traffic = read_inference(st, spec.name, spec.drift.window_days, target=spec.target)
        if source == "inference" or len(traffic) >= spec.drift.min_rows:
            if traffic.empty:
                raise DataError(f"{spec.name}: no logged predictions in the last "
                                f"{spec.drift.window_days} day(s)", model=spec.name)  # fmt: skip
            snap = snapshot(traffic, [st.uri_for(f"inference/{spec.name}")], st,
                            model=spec.name, kind="inference")  # fmt: skip
            labelled = int(traffic[spec.target].notna().sum()) if spec.target in traffic else 0
            return {**{k: snap[k] for k in ("hash", "uri", "rows")}, "source": "inference",
                    "labelled_rows": labelled}  # fmt: skip
    snap = snapshot_data(spec, end=end, window_days=spec.drift.window_days, store=st)
    return {**snap, "source": "batches"}


def validate_current(
    spec: ModelSpec,
    reference: dict[str, Any],
    current: dict[str, Any],
    run_id: str,
    store: ArtifactStore | None = None,
) -> dict[str, Any]:
    """Validate the current window against the reference (features only for traffic)."""
    return validate_data(spec, current["hash"], run_id, reference_hash=reference["hash"],
                         store=store, name="validation-current",
                         serving=current.get("source") == "inference")  # fmt: skip


def decide(
    spec: ModelSpec,
    drift_result: dict[str, Any],
    run_id: str,
    store: ArtifactStore | None = None,
    at: datetime | None = None,
) -> dict[str, Any]:
    """Apply the retrain policy and record the check; returns the decision and its evidence."""
    st = store or open_store()
    reg = Registry(st)
    doc = reg.alias_doc(spec.name)
    decision = policy.decide(
        spec,
        drift_result.get("data"),
        drift_result.get("performance"),
        drift_result["current_rows"],
        policy.history(st, spec.name, limit=50),
        doc.get("since") if doc else None,
        at=at,
        reference_version=drift_result.get("reference_version"),
    )
    log.info("%s: %s: %s", spec.name, decision.decision, "; ".join(decision.reasons))
    data = drift_result.get("data") or {}
    record = policy.record_check(spec.name, decision, {
        "run_id": run_id,
        "report_uri": drift_result["report_uri"],
        "drifted_share": data.get("drifted_share"),
        "drifted_columns": data.get("drifted_columns", []),
        "performance": drift_result.get("performance"),
        "reference_version": drift_result.get("reference_version"),
    }, store=st, at=at)  # fmt: skip
    return {
        "decision": decision.decision,
        "reason": "; ".join(decision.reasons),
        "drift_share": data.get("drifted_share"),
        "drifted_columns": data.get("drifted_columns", []),
        "report_uri": drift_result["report_uri"],
        "monitor_run_id": run_id,
        "check_id": record["check_id"],
    }


def run_monitor(
    spec: ModelSpec,
    store: ArtifactStore | None = None,
    run_id: str | None = None,
    at: datetime | None = None,
) -> dict[str, Any]:
    """load_reference → load_current → validate_current → drift.check → decide."""
    st = store or open_store()
    run_id = run_id or new_run_id("monitor")
    reference = load_reference(spec, st)
    current = load_current(spec, store=st)
    from mlops_tasks import drift

    validate_current(spec, reference, current, run_id, store=st)
    result = drift.check(spec, reference, current["hash"], run_id, store=st)
    return decide(spec, result, run_id, store=st, at=at)


def drift_trigger(decision: dict[str, Any]) -> dict[str, Any]:
    """The trigger a drift decision hands to the retrain run (the Asset event's `extra`)."""
    return trigger_info(
        "drift",
        user="monitor",
        reason=decision["reason"],
        drift={k: decision[k] for k in ("report_uri", "drift_share", "drifted_columns",
                                        "monitor_run_id", "check_id")},
    )  # fmt: skip


def change_production(
    model: str,
    action: str,
    version: int | None,
    reason: str,
    actor: str,
    store: ArtifactStore | None = None,
) -> dict[str, Any]:
    """Promote `version` or roll back (to `version`, default the previous production)."""
    reg = Registry(store or open_store())
    if action == "promote":
        if version is None:
            raise MlopsError("promote needs a version", model=model)
        return reg.promote(model, version, reason=reason, actor=actor)
    if action == "rollback":
        return reg.rollback(model, to=version, reason=reason, actor=actor)
    raise MlopsError(f"unknown action {action!r}: use promote or rollback", model=model)


def add_cli_commands(add: Any) -> None:
    """Register `mlops run ...` and `mlops demo ...` on the CLI parser."""
    from mlops_tasks import cli_pipeline

    cli_pipeline.register(add)
