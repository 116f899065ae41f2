"""Retrain policy: turns a drift result into a `retrain` / `no_retrain` decision with reasons.

Every check is recorded (immutable, one object each) under `models/<name>/monitoring/`, so the
history of checks, including the ones that found nothing, can be read back; the hysteresis
(consecutive drifted checks) and the cooldown are computed from that history and the run's
logical time (`as_of`), never the wall clock. A retrain request is also claimed with a
conditional write under `models/<name>/requests/`, so concurrent monitors make at most one.
"""

from __future__ import annotations

import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

from mlops_tasks.records import Decision, DriftResult, to_json
from mlops_tasks.registry import Registry, now
from mlops_tasks.specs import ModelSpec
from mlops_tasks.storage import ArtifactStore, encode_json

RETRAIN = "retrain"
NO_RETRAIN = "no_retrain"
#: A retrain did not fix what it was asked for: stop asking, raise it for a person.
ESCALATE = "escalate"


def _parse(ts: str) -> datetime:
    return datetime.fromisoformat(ts.replace("Z", "+00:00"))


def _span(delta: timedelta) -> str:
    minutes = max(0.0, delta.total_seconds() / 60)
    return f"{minutes:.0f} min" if minutes < 120 else f"{minutes / 60:.1f} h"


def history(store: ArtifactStore, model: str, limit: int | None = None) -> list[dict[str, Any]]:
    """Recorded monitoring checks, oldest first."""
    keys = store.list_keys(f"models/{model}/monitoring/")
    if limit:
        keys = keys[-limit:]
    return [store.get_json(k) for k in keys]


def _evidence(spec: ModelSpec, drift: DriftResult) -> list[str]:
    """The findings, what drifted first."""
    windows = [("batches", drift.data)]
    if drift.traffic:
        windows.append(("traffic", drift.traffic))
    lines = []
    for label, data in windows:
        verdict = ">=" if data.drift_detected else "<"
        cols = ", ".join(data.drifted_columns[:8]) or "none"
        lines.append(
            (
                data.drift_detected,
                f"data drift ({label}): {data.drifted_share:.0%} of columns drifted {verdict} "
                f"{spec.drift.drift_share:.0%} threshold ({cols})",
            )
        )
    perf = drift.performance
    if perf:
        lines.append((perf.drift_detected, perf.summary))
    return [text for _, text in sorted(lines, key=lambda x: not x[0])]


def _what_drifted(drift: DriftResult) -> str:
    parts = []
    if drift.data.drift_detected:
        parts.append(f"batches ({', '.join(drift.data.drifted_columns[:4])})")
    if drift.traffic and drift.traffic.drift_detected:
        parts.append(f"traffic ({', '.join(drift.traffic.drifted_columns[:4])})")
    if drift.performance and drift.performance.drift_detected:
        perf = drift.performance
        drop = f" dropped {perf.drop:.4g}" if perf.drop is not None else " dropped"
        parts.append(f"performance ({perf.metric}{drop})")
    return " and ".join(parts) or "nothing"


def _unresolved(
    drift: DriftResult,
    past_checks: list[dict[str, Any]],
    answers: dict[str, list[tuple[int, str]]],
) -> tuple[str, str] | None:
    """(decision, why) when a retrain would not help: the last retrain asked for on
    overlapping evidence was done and did not fix it (its version went to production and the
    same drift is still here, or the gate rejected it: escalate), or the same evidence was
    already escalated (no retrain). None otherwise."""
    evidence = set(drift.evidence())
    for past in reversed(past_checks):
        kind = past.get("decision")
        if kind not in (RETRAIN, ESCALATE) or not evidence & set(past.get("evidence") or ()):
            continue
        when = past.get("decided_for") or past.get("at")
        if kind == ESCALATE and past.get("reference_version") == drift.reference_version:
            return NO_RETRAIN, (
                f"escalated: this evidence was raised for a person at {when} (check "
                f"{past.get('check_id')}); no retrain until production changes by hand"
            )
        if kind != RETRAIN:
            continue
        if past.get("reference_version") != drift.reference_version:
            return ESCALATE, (
                f"the retrain requested at {when} on the same evidence put "
                f"v{drift.reference_version} in production, and it drifts the same way; "
                "retraining on this data again would not fix it"
            )
        done = answers.get(str(past.get("check_id")), [])
        if done and all(status == "rejected" for _, status in done):
            versions = ", ".join(f"v{v}" for v, _ in done)
            return ESCALATE, (
                f"the retrain requested at {when} on the same evidence produced "
                f"{versions}, which the gate rejected; retraining on this data again would "
                "not fix it"
            )
        return None
    return None


def _streak(spec: ModelSpec, drift: DriftResult, past_checks: list[dict[str, Any]]) -> int:
    """Consecutive drifted checks ending with this one, counting only checks that counted:
    drifted, with enough rows, against the same reference (a promotion starts a new streak)."""
    if not drift.detected:
        return 0
    streak = 1
    min_rows = spec.drift.min_rows
    for past in reversed(past_checks):
        if (
            not past.get("drift_detected")
            or past.get("current_rows", min_rows) < min_rows
            or past.get("reference_version", drift.reference_version) != drift.reference_version
        ):
            break
        streak += 1
    return streak


def _cooldown(
    spec: ModelSpec,
    past_checks: list[dict[str, Any]],
    last_promotion_at: str | None,
    as_of: datetime,
) -> tuple[str, str] | None:
    """(what blocks, why) when a retrain request or promotion happened within the cooldown."""
    cooldown = timedelta(hours=spec.drift.cooldown_hours)
    last_request = next(
        (
            c.get("decided_for") or c["at"]
            for c in reversed(past_checks)
            if c.get("decision") == RETRAIN
        ),
        None,
    )
    for label, ts in (("retrain request", last_request), ("promotion", last_promotion_at)):
        if ts and cooldown > timedelta(0) and as_of - _parse(ts) < cooldown:
            since, ends = _parse(ts), _parse(ts) + cooldown
            return label, (
                f"within cooldown: last {label} at {ts} ({_span(as_of - since)} before this "
                f"check); retraining is allowed again from {ends:%Y-%m-%d %H:%M} UTC "
                f"({_span(ends - as_of)} later)"
            )
    return None


def apply_policy(
    spec: ModelSpec,
    drift: DriftResult,
    past_checks: list[dict[str, Any]],
    last_promotion_at: str | None,
    as_of: datetime,
    run_id: str,
    answers: dict[str, list[tuple[int, str]]] | None = None,
) -> Decision:
    """Apply the spec's drift policy (threshold, persistence, cooldown, minimum rows, and
    no second retrain on evidence a retrain did not fix: that is escalated to a person).

    `answers` maps a retrain request's check id to the versions trained for it and their
    status. The first reason is what decided; the evidence follows.
    """
    reasons = _evidence(spec, drift)
    streak = _streak(spec, drift, past_checks)

    def decision(kind: str, lead: str | None, blocked_by: str | None = None) -> Decision:
        return Decision(
            decision=kind,  # type: ignore[arg-type]
            reasons=tuple([lead, *reasons] if lead else reasons),
            drift_detected=drift.detected,
            streak=streak,
            check_id=uuid.uuid4().hex,
            report_uri=drift.report_uri,
            drift_share=drift.data.drifted_share,
            drifted_columns=drift.data.drifted_columns,
            run_id=run_id,
            as_of=as_of,
            current_rows=drift.current_rows,
            blocked_by=blocked_by,
            evidence=drift.evidence(),
        )

    if drift.current_rows < spec.drift.min_rows:
        lead = (
            f"only {drift.current_rows} rows in the current window "
            f"(< minimum {spec.drift.min_rows}); not enough evidence"
        )
        return decision(NO_RETRAIN, lead)
    if not drift.detected:
        return decision(NO_RETRAIN, "no drift detected")
    if streak < spec.drift.consecutive_checks:
        lead = (
            f"drift seen in {streak} consecutive check(s); {spec.drift.consecutive_checks} required"
        )
        return decision(NO_RETRAIN, lead)
    if blocked := _cooldown(spec, past_checks, last_promotion_at, as_of):
        return decision(NO_RETRAIN, blocked[1], blocked_by=blocked[0])
    if unresolved := _unresolved(drift, past_checks, answers or {}):
        return decision(unresolved[0], unresolved[1], blocked_by="escalation")
    return decision(
        RETRAIN,
        f"{_what_drifted(drift)} drifted for {streak} consecutive check(s) and no cooldown applies",
    )


def retrain_answers(registry: Registry, model: str) -> dict[str, list[tuple[int, str]]]:
    """The versions trained for each retrain request (by its check id), with their status."""
    out: dict[str, list[tuple[int, str]]] = {}
    for v in registry.versions(model):
        request = v.triggered_by.drift
        if request is not None:
            out.setdefault(request.check_id, []).append((v.version, v.status))
    return out


def _request_window(as_of: datetime, cooldown_hours: float) -> str:
    """The cooldown window `as_of` falls in (windows start at the epoch): at most one retrain
    request per production version per window, whoever decides it."""
    if cooldown_hours > 0:
        return str(int(as_of.timestamp() // (cooldown_hours * 3600)))
    return as_of.strftime("%Y%m%dT%H%M%S")


def _claim_request(
    store: ArtifactStore,
    model: str,
    decision: Decision,
    drift: DriftResult,
    as_of: datetime,
    cooldown_hours: float,
) -> dict[str, Any] | None:
    """Record the retrain request with a conditional write keyed by its evidence; None when
    this decision owns it, else the request another monitor recorded first."""
    window = _request_window(as_of, cooldown_hours)
    key = f"models/{model}/requests/{drift.reference_version}-{window}.json"
    claim = {
        "check_id": decision.check_id,
        "run_id": decision.run_id,
        "reference_version": drift.reference_version,
        "decided_for": as_of.isoformat(),
        "at": now(),
    }
    if store.put_if_absent(key, encode_json(claim)):
        return None
    winner: dict[str, Any] = store.get_json(key)
    # A retry of the run that won keeps its request (a task retry must not lose to itself).
    return None if winner.get("run_id") == decision.run_id else winner


#: Decisions that leave an audit event, and its action.
_AUDITED = {RETRAIN: "retrain_request", ESCALATE: "escalate"}


def record_decision(
    store: ArtifactStore,
    model: str,
    decision: Decision,
    drift: DriftResult,
    cooldown_hours: float = 0.0,
) -> tuple[Decision, dict[str, Any]]:
    """Store one monitoring check (immutable) and, for a retrain decision, claim the retrain
    request and write its audit event.

    Two monitors deciding at once for the same production version within one cooldown window
    race for one conditional write (`models/<name>/requests/<version>-<window>.json`); the
    loser's decision becomes `no_retrain`, saying which check already asked. Returns the
    decision as settled and the stored record.
    """
    as_of = (decision.as_of or datetime.now(UTC)).astimezone(UTC)
    if decision.decision == RETRAIN and (
        winner := _claim_request(store, model, decision, drift, as_of, cooldown_hours)
    ):
        lead = (
            f"another monitor already requested a retrain of v{drift.reference_version} in "
            f"this cooldown window (check {winner.get('check_id')}, run {winner.get('run_id')}, "
            f"as of {winner.get('decided_for')})"
        )
        decision = replace(
            decision,
            decision="no_retrain",
            reasons=(lead, *decision.reasons[1:]),
            blocked_by="retrain request",
        )
    record = {
        **to_json(decision),
        "model": model,
        "at": now(),
        "decided_for": as_of.isoformat(),
        "drifted_share": drift.data.drifted_share,
        "performance": to_json(drift.performance),
        "reference_version": drift.reference_version,
        "cooldown_blocked_by": decision.blocked_by,
    }
    stamp = record["at"].replace(":", "").replace("-", "")
    key = f"models/{model}/monitoring/{stamp}_{decision.check_id}.json"
    store.put_if_absent(key, encode_json(record))
    if action := _AUDITED.get(decision.decision):
        details: dict[str, Any] = {
            "check_id": decision.check_id,
            "report_uri": decision.report_uri,
            "run_id": decision.run_id,
        }
        if decision.decision == ESCALATE:  # what a person is asked to look at
            details["evidence"] = list(decision.evidence)
        Registry(store).record_event(
            model, action, actor="monitor", reason=decision.reason, details=details
        )
    return decision, record


def record_check(
    store: ArtifactStore,
    model: str,
    decision: Decision,
    drift: DriftResult,
    cooldown_hours: float = 0.0,
) -> dict[str, Any]:
    """`record_decision`, returning only the stored record (its `decision` is as settled)."""
    return record_decision(store, model, decision, drift, cooldown_hours)[1]
