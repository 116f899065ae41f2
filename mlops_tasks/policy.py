"""Retrain policy: turns drift results into a `retrain` / `no_retrain` decision with reasons.

Every check is recorded (immutable, one object each) under `models/<name>/monitoring/`, so the
history of checks, including the ones that found nothing, can be read back; the hysteresis
(consecutive drifted checks) and the cooldown are computed from that history.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from mlops_tasks.registry import Registry, now
from mlops_tasks.specs import ModelSpec
from mlops_tasks.storage import ArtifactStore, encode_json, open_store

RETRAIN = "retrain"
NO_RETRAIN = "no_retrain"


@dataclass
class Decision:
    decision: str
    reasons: list[str]
    drift_detected: bool
    streak: int
    facts: dict[str, Any] = field(default_factory=dict)


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


def decide(
    spec: ModelSpec,
    data_drift: dict[str, Any] | None,
    performance: dict[str, Any] | None,
    current_rows: int,
    past_checks: list[dict[str, Any]],
    last_promotion_at: str | None,
    at: datetime | None = None,
    reference_version: int | None = None,
) -> Decision:
    """Apply the spec's drift policy (threshold, persistence, cooldown, minimum rows)."""
    policy = spec.drift
    at = at or datetime.now(UTC)
    reasons: list[str] = []
    data_drifted = bool(data_drift and data_drift.get("drift_detected"))
    perf_drifted = bool(performance and performance.get("drift_detected"))
    if data_drift:
        share = data_drift["drifted_share"]
        cols = data_drift.get("drifted_columns", [])
        verdict = ">=" if data_drifted else "<"
        reasons.append(
            f"data drift: {share:.0%} of columns drifted {verdict} {policy.drift_share:.0%} "
            f"threshold ({', '.join(cols[:8]) or 'none'})"
        )
    if performance:
        reasons.append(performance.get("summary", "performance checked"))
    detected = data_drifted or perf_drifted
    streak = 0
    if detected:
        streak = 1
        for past in reversed(past_checks):
            # Only checks that counted: drifted, with enough rows, against the same reference
            # (a promotion starts a new streak).
            if (
                not past.get("drift_detected")
                or past.get("current_rows", policy.min_rows) < policy.min_rows
                or (reference_version is not None
                    and past.get("reference_version", reference_version) != reference_version)
            ):  # fmt: skip
                break
            streak += 1
    facts: dict[str, Any] = {"current_rows": current_rows, "streak": streak}
    if current_rows < policy.min_rows:
        reasons.insert(0, f"only {current_rows} rows in the current window "
                          f"(< minimum {policy.min_rows}); not enough evidence")  # fmt: skip
        return Decision(NO_RETRAIN, reasons, detected, streak, facts)
    if not detected:
        reasons.insert(0, "no drift detected")
        return Decision(NO_RETRAIN, reasons, False, 0, facts)
    if streak < policy.consecutive_checks:
        reasons.insert(0, f"drift seen in {streak} consecutive check(s); "
                          f"{policy.consecutive_checks} required")  # fmt: skip
        return Decision(NO_RETRAIN, reasons, True, streak, facts)
    cooldown = timedelta(hours=policy.cooldown_hours)
    last_request = next(
        (
            c.get("decided_for") or c["at"]
            for c in reversed(past_checks)
            if c.get("decision") == RETRAIN
        ),
        None,
    )
    for label, ts in (("retrain request", last_request), ("promotion", last_promotion_at)):
        if ts and at - _parse(ts) < cooldown:
            since, ends = _parse(ts), _parse(ts) + cooldown
            reasons.insert(0, f"within cooldown: last {label} at {ts} ({_span(at - since)} ago); "
                              f"retraining is allowed again from {ends:%Y-%m-%d %H:%M} UTC "
                              f"({_span(ends - at)} from now)")  # fmt: skip
            facts["cooldown_blocked_by"] = label
            return Decision(NO_RETRAIN, reasons, True, streak, facts)
    reasons.append(f"drift persisted for {streak} check(s) and no cooldown applies")
    return Decision(RETRAIN, reasons, True, streak, facts)


def record_check(
    model: str,
    decision: Decision,
    details: dict[str, Any],
    store: ArtifactStore | None = None,
    at: datetime | None = None,
) -> dict[str, Any]:
    """Store one monitoring check (immutable) and, for a retrain decision, an audit event.

    `at` is the time the check was decided for when that is not now (a simulated clock);
    cooldowns are measured from it so they agree with the decision.
    """
    st = store or open_store()
    record = {
        "check_id": uuid.uuid4().hex,
        "model": model,
        "at": now(),
        "decided_for": at.astimezone(UTC).isoformat() if at else None,
        "decision": decision.decision,
        "reasons": decision.reasons,
        "drift_detected": decision.drift_detected,
        "streak": decision.streak,
        **decision.facts,
        **details,
    }
    stamp = record["at"].replace(":", "").replace("-", "")
    st.put_if_absent(f"models/{model}/monitoring/{stamp}_{record['check_id']}.json",
                     encode_json(record))  # fmt: skip
    if decision.decision == RETRAIN:
        Registry(st).record_event(model, "retrain_request", actor="monitor",
                                  reason="; ".join(decision.reasons),
                                  details={"check_id": record["check_id"],
                                           "report_uri": details.get("report_uri"),
                                           "run_id": details.get("run_id")})  # fmt: skip
    return record
