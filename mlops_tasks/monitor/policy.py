"""Retrain policy: turns a drift result into a `retrain` / `no_retrain` decision with reasons.

Every check is recorded (immutable, one object each) under `models/<name>/monitoring/`, so the
history of checks, including the ones that found nothing, can be read back; the hysteresis
(consecutive drifted checks) and the cooldown are computed from that history and the run's
logical time (`as_of`), never the wall clock. A retrain request is also claimed with a
conditional write under `models/<name>/requests/`, so concurrent monitors make at most one.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from mlops_tasks.model.modelling import direction, worse_by
from mlops_tasks.records import (
    Decision,
    DriftResult,
    MonitoringCheck,
    PerformanceDrift,
    ProductionAlias,
    to_json,
)
from mlops_tasks.registry import Registry, now
from mlops_tasks.specs import ModelSpec
from mlops_tasks.storage import ArtifactStore, encode_json

RETRAIN = "retrain"
NO_RETRAIN = "no_retrain"
#: A retrain did not fix what it was asked for: stop asking, raise it for a person.
ESCALATE = "escalate"


def _parse(ts: str) -> datetime:
    """A stored time; one without a zone (none is written so) is UTC, as everywhere."""
    parsed = datetime.fromisoformat(ts.replace("Z", "+00:00"))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _span(delta: timedelta) -> str:
    minutes = max(0.0, delta.total_seconds() / 60)
    return f"{minutes:.0f} min" if minutes < 120 else f"{minutes / 60:.1f} h"


@dataclass(frozen=True)
class ProductionMove:
    """The alias move that put the production version there, as the alias document keeps
    its audit event: a promotion, a rollback or an alias repair."""

    version: int
    #: `promote`, `rollback` or `repair_alias`; None for an alias document without its event.
    action: str | None
    #: When: the logical time of the run that made the move, else (a move by hand, which has
    #: no logical time) the wall-clock time it happened; `logical` says which. The promotion
    #: cooldown counts from it (`production_since`).
    at: str | None
    actor: str | None = None
    from_version: int | None = None
    forced: bool = False
    logical: bool = True
    #: The move's audit event id; checks name it beside where they placed the move in time.
    event_id: str | None = None

    @property
    def key(self) -> str:
        """What identifies this move in the checks that record it (`production_move`)."""
        return self.event_id or f"v{self.version} at {self.at}"


def production_move(alias: ProductionAlias | None) -> ProductionMove | None:
    """How the production version got there (None before the first promotion).

    `at` is the `as_of` of the run that made the move (a retrain's promotion, the rollback of
    its failed verification, a change-production run), else (a promotion, rollback or repair
    by hand) the wall-clock time it happened, with `logical` False. A replay of history
    (`--as-of`, an Airflow backfill) then counts the promotion cooldown from the promotion it
    replayed, not from the wall clock of today, which lies after every replayed date and would
    hold every retrain back; `production_since` says how a move by hand is counted.
    """
    if alias is None or alias.version is None:
        return None
    event = alias.event or {}
    details = event.get("details") or {}
    as_of = details.get("as_of")
    return ProductionMove(
        version=alias.version,
        action=event.get("action"),
        at=as_of or alias.since,
        actor=event.get("actor"),
        from_version=event.get("from_version"),
        forced=bool(details.get("forced")),
        logical=as_of is not None,
        event_id=event.get("event_id"),
    )


def in_past(past_checks: Sequence[MonitoringCheck], as_of: datetime) -> list[MonitoringCheck]:
    """The checks in the past of a check as of `as_of`, in logical time: decided for `as_of`
    or earlier (a check recorded without `decided_for`, by when it ran), oldest first.

    A replay run again over earlier dates, or beside the live monitor, finds checks decided
    for later dates in the store; they are not its history (neither streak nor cooldown), and
    a cooldown counted from one of them would lie in the future.
    """
    dated = [(_parse(c.when), i, c) for i, c in enumerate(past_checks)]
    return [c for when, _, c in sorted(dated, key=lambda x: x[:2]) if when <= as_of]


@dataclass(frozen=True)
class MoveTime:
    """Where a check places production's last move in its own clock (`production_since`)."""

    at: datetime
    #: True when the move lay after the check's `as_of` and was placed at the `as_of` of the
    #: first check that saw it.
    placed: bool = False


def production_since(
    production: ProductionMove | None, past: Sequence[MonitoringCheck], as_of: datetime
) -> MoveTime | None:
    """When production's last move happened in the clock of a check as of `as_of`: the
    promotion cooldown counts from it, and every check records it (`production_since`).

    A move made by a run carries that run's logical time; a move by hand (`mlops promote`,
    `rollback`, `repair-alias`, the Models view) only the wall-clock time it happened. Either
    counts from that time when it lies at or before `as_of`, so a live monitor counts a move
    by hand from when it happened. A move after `as_of` is in no clock this check can count
    in: a replay of dates before a rollback made by hand today, or a check whose logical time
    lags behind a promotion. It is placed at the `as_of` of the first check that saw it (the
    earliest `production_since` the `past` checks recorded for it, this check's own `as_of`
    when none did), as if it had happened just before that check: a replay then counts the
    cooldown from where the move entered it, in replayed time, and lets the replay go on
    once it has passed.
    """
    if production is None or production.at is None:
        return None
    at = _parse(production.at)
    if at <= as_of:
        return MoveTime(at)
    seen = [
        _parse(c.production_since)
        for c in past
        if c.production_move == production.key and c.production_since
    ]
    return MoveTime(min((t for t in seen if t <= as_of), default=as_of), placed=True)


#: An alias move's action as a reason names it.
_MOVES = {"promote": "promotion", "rollback": "rollback", "repair_alias": "alias repair"}


def in_production(move: ProductionMove | None, version: int) -> str:
    """How v`version`, the production version a check judged, got there: every reason that
    mentions it says it this way (`v1 is in production by rollback from v4 at ... by alice`),
    so a rollback is never passed off as what a retrain did."""
    if move is None:
        return f"v{version} is in production"
    if move.version != version:  # production moved while the check ran
        now_there = in_production(move, move.version)
        return f"v{version} was in production when this check began; {now_there}"
    if move.action is None:
        return f"v{version} is in production since {move.at}"
    how = "forced promotion" if move.forced else _MOVES.get(move.action, move.action)
    origin = f" from v{move.from_version}" if move.from_version is not None else ""
    who = f" by {move.actor}" if move.actor else ""
    return f"v{version} is in production by {how}{origin} at {move.at}{who}"


def _live_performance(perf: PerformanceDrift | None) -> str | None:
    """Production's performance on the labelled rows of this check, for a reason a person
    acts on (None without a label column); why it was not measured when it was not."""
    if perf is None:
        return None
    if perf.current is None or perf.baseline is None:
        return perf.summary
    return (
        f"live {perf.metric} {perf.current:.4f} on {perf.labelled_rows} labelled rows "
        f"({perf.baseline:.4f} at training)"
    )


#: What became of a version a retrain produced, unless it is the production one.
_OUTCOMES = {
    "rejected": "rejected by its gate",
    "archived": "since out of production",
    "candidate": "not promoted",
    "production": "now in production",
}


def _produced(done: list[tuple[int, str]], production: int) -> str:
    if not done:
        return "no version"
    return ", ".join(
        f"v{v}" if v == production else f"v{v} ({_OUTCOMES.get(status, status)})"
        for v, status in done
    )


#: What every reader of a stored check relies on, by field: required, then optional (older
#: checks lack some; None where given means absent too).
_CHECK_REQUIRED: dict[str, Any] = {"decision": str, "at": str}
_CHECK_OPTIONAL: dict[str, Any] = {
    "check_id": str,
    "decided_for": str,
    "run_id": str,
    "report_uri": str,
    "drift_detected": bool,
    "current_rows": int,
    "reference_version": int,
    "reference_kind": str,
    "reference_hash": str,
    "reference_start": str,
    "reference_end": str,
    "streak": int,
    "drifted_share": (int, float),
    "drift_share": (int, float),
    "reasons": list,
    "evidence": list,
    "drifted_columns": list,
    "performance": dict,
    "blocked_by": str,
    "production_move": str,
    "production_since": str,
}
_DECISIONS = ("retrain", "no_retrain", "escalate")


def _check_problem(doc: Any) -> str | None:
    """What is wrong with the shape of a stored check, None when nothing is."""
    if not isinstance(doc, dict):
        return f"a JSON {type(doc).__name__}, not an object"
    for name, kind in {**_CHECK_REQUIRED, **_CHECK_OPTIONAL}.items():
        value = doc.get(name)
        if value is None and name in _CHECK_OPTIONAL:
            continue
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            return f"{name} is {value!r}"
    if doc["decision"] not in _DECISIONS:
        return f"decision is {doc['decision']!r}, not one of {', '.join(_DECISIONS)}"
    for name in ("reasons", "evidence", "drifted_columns"):
        if any(not isinstance(item, str) for item in doc.get(name) or ()):
            return f"{name} holds something other than text"
    return None


def history(store: ArtifactStore, model: str, limit: int | None = None) -> list[dict[str, Any]]:
    """Recorded monitoring checks, oldest first; IntegrityError naming the file of one that
    is not a check (every reader, the policy included, relies on its shape)."""
    from mlops_tasks.errors import IntegrityError

    keys = store.list_keys(f"models/{model}/monitoring/")
    if limit:
        keys = keys[-limit:]
    checks = []
    for key in keys:
        doc = store.get_json(key)  # IntegrityError naming the file when it is not JSON
        if problem := _check_problem(doc):
            uri = store.uri_for(key)
            raise IntegrityError(
                f"{uri}: not a valid monitoring check ({problem}); restore it from a backup "
                "or move it out of the store (docs/operations.md)",
                key=key,
                uri=uri,
            )
        checks.append(doc)
    return checks


def check_flag(doc: dict[str, Any]) -> str | None:
    """What a stored check flags beside its decision (None: nothing): a performance metric
    undefined on its labelled window (`metric undefined: the labelled window holds one class
    (all 1)`), which neither triggers nor blocks a retrain and hides behind `no drift`."""
    why = (doc.get("performance") or {}).get("undefined")
    return f"metric undefined: {why}" if why else None


def checks(store: ArtifactStore, model: str, limit: int | None = None) -> list[MonitoringCheck]:
    """The recorded checks (`history`) as the policy reads them, oldest first."""
    return [check_record(doc) for doc in history(store, model, limit)]


def check_record(doc: dict[str, Any]) -> MonitoringCheck:
    """A stored check (its shape checked by `history`) as a record."""
    return MonitoringCheck(
        decision=doc["decision"],
        at=doc["at"],
        decided_for=doc.get("decided_for"),
        check_id=doc.get("check_id"),
        drift_detected=bool(doc.get("drift_detected")),
        current_rows=doc.get("current_rows"),
        reference_version=doc.get("reference_version"),
        evidence=tuple(doc.get("evidence") or ()),
        production_move=doc.get("production_move"),
        production_since=doc.get("production_since"),
        reference_kind=doc.get("reference_kind") or "training",
    )


def _evidence(spec: ModelSpec, drift: DriftResult) -> list[str]:
    """The findings, what drifted first."""
    windows = [] if drift.data_not_checked else [("batches", drift.data)]
    if drift.traffic:
        windows.append(("traffic", drift.traffic))
    lines = []
    if drift.data_not_checked:
        lines.append((False, f"data drift: not checked ({drift.data_not_checked})"))
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


def _performance_change(spec: ModelSpec, perf: PerformanceDrift) -> str:
    """What the performance metric did, for the reason that retrains on it: `log_loss rose
    from 0.4100 to 0.4600, worse by 0.0500, allowed 0.04`."""
    base, current = perf.baseline, perf.current
    if current is None or base is None:
        return perf.metric
    allowed = f", allowed {perf.max_drop:.4g}" if perf.max_drop is not None else ""
    return (
        f"{perf.metric} {direction(base, current)} from {base:.4f} to {current:.4f}, "
        f"{worse_by(spec.task, perf.metric, base, current)}{allowed}"
    )


def _what_drifted(spec: ModelSpec, drift: DriftResult) -> str:
    parts = []
    if drift.data.drift_detected:
        parts.append(f"batches ({', '.join(drift.data.drifted_columns[:4])})")
    if drift.traffic and drift.traffic.drift_detected:
        parts.append(f"traffic ({', '.join(drift.traffic.drifted_columns[:4])})")
    if drift.performance and drift.performance.drift_detected:
        parts.append(f"performance ({_performance_change(spec, drift.performance)})")
    return " and ".join(parts) or "nothing"


def _unresolved(
    drift: DriftResult,
    past_checks: Sequence[MonitoringCheck],
    answers: dict[str, list[tuple[int, str]]],
    production: ProductionMove | None,
) -> tuple[str, str] | None:
    """(decision, why) when a retrain would not help: the last retrain asked for on
    overlapping evidence was done and did not fix it (production changed since and the same
    drift is still here, or the gate rejected it: escalate), or the same evidence was already
    escalated (no retrain). None otherwise.

    An escalation says what that retrain produced, how the production version got there (a
    rollback is not the retrain's doing) and, where labels exist, production's live
    performance: what a person needs first, in the reason every view shows.
    """
    evidence = set(drift.evidence())
    live = _live_performance(drift.performance)
    for past in reversed(past_checks):
        kind = past.decision
        if kind not in (RETRAIN, ESCALATE) or not evidence & set(past.evidence):
            continue
        when = past.when
        if kind == ESCALATE and past.reference_version == drift.reference_version:
            held = [
                f"escalated: this evidence was raised for a person at {when} (check "
                f"{past.check_id})",
                live,
                "no retrain until production changes by hand",
            ]
            return NO_RETRAIN, "; ".join(p for p in held if p)
        if kind != RETRAIN:
            continue
        done = answers.get(str(past.check_id), [])
        moved = past.reference_version != drift.reference_version
        rejected = bool(done) and all(status == "rejected" for _, status in done)
        if not moved and not rejected:
            return None  # still running, or not done yet: the cooldown decides
        # Only a version of that retrain judged here (in production now) or by its gate shows
        # that retraining does not fix this; production moved by hand leaves it to a person.
        tried = any(v == drift.reference_version or st == "rejected" for v, st in done)
        parts = [
            f"the retrain requested at {when} on the same evidence produced "
            f"{_produced(done, drift.reference_version)}",
            f"{in_production(production, drift.reference_version)}, and it drifts the same way",
            live,
            "retraining on this data again would not fix it"
            if tried
            else "retraining on the same evidence again is left to a person",
        ]
        return ESCALATE, "; ".join(p for p in parts if p)
    return None


def _streak(spec: ModelSpec, drift: DriftResult, past_checks: Sequence[MonitoringCheck]) -> int:
    """Consecutive drifted checks ending with this one, counting only checks that counted:
    drifted, with enough rows, against the same reference (a promotion, or another kind of
    `drift.reference`, starts a new streak)."""
    if not drift.detected:
        return 0
    streak = 1
    min_rows = spec.drift.min_rows
    for past in reversed(past_checks):
        rows = past.current_rows if past.current_rows is not None else min_rows
        reference = past.reference_version
        if (
            not past.drift_detected
            or rows < min_rows
            or (reference is not None and reference != drift.reference_version)
            or past.reference_kind != drift.reference_kind
        ):
            break
        streak += 1
    return streak


def _cooldown(
    spec: ModelSpec,
    drift: DriftResult,
    past: Sequence[MonitoringCheck],
    production: ProductionMove | None,
    moved: MoveTime | None,
    as_of: datetime,
) -> tuple[str, str] | None:
    """(what blocks, why) when a retrain request or a move of production (promotion,
    rollback, repair; `blocked_by` calls each `promotion`) happened within the cooldown.

    `past` are the checks in this check's past (`in_past`) and `moved` where it places the
    move (`production_since`): every span is counted in the check's own clock."""
    cooldown = timedelta(hours=spec.drift.cooldown_hours)
    if cooldown <= timedelta(0):
        return None
    last_request = next((c.when for c in reversed(past) if c.decision == RETRAIN), None)
    if last_request is not None and as_of - (since := _parse(last_request)) < cooldown:
        return "retrain request", _within(
            f"last retrain request at {last_request}", since, cooldown, as_of
        )
    if moved is not None and as_of - moved.at < cooldown:
        what = in_production(production, drift.reference_version)
        if moved.placed:
            how = "made by hand" if production and not production.logical else "which lies"
            what += (
                f", {how} after this check's as_of: counted from "
                f"{moved.at:%Y-%m-%d %H:%M} UTC, the as_of of the first check that saw it"
            )
        return "promotion", _within(what, moved.at, cooldown, as_of)
    return None


def _within(what: str, since: datetime, cooldown: timedelta, as_of: datetime) -> str:
    ends = since + cooldown
    return (
        f"within cooldown: {what} ({_span(as_of - since)} before this check); "
        f"retraining is allowed again from {ends:%Y-%m-%d %H:%M} UTC ({_span(ends - as_of)} later)"
    )


def apply_policy(
    spec: ModelSpec,
    drift: DriftResult,
    past_checks: Sequence[MonitoringCheck],
    production: ProductionMove | None,
    as_of: datetime,
    run_id: str,
    answers: dict[str, list[tuple[int, str]]] | None = None,
) -> Decision:
    """Apply the spec's drift policy (threshold, persistence, cooldown, minimum rows, and
    no second retrain on evidence a retrain did not fix: that is escalated to a person).

    `production` is how the production version got there (`production_move`); `answers`
    maps a retrain request's check id to the versions trained for it and their status. The
    first reason is what decided; the evidence follows.
    """
    reasons = _evidence(spec, drift)
    past = in_past(past_checks, as_of)
    streak = _streak(spec, drift, past)
    moved = production_since(production, past, as_of)

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
            production_move=production.key if production else None,
            production_since=moved.at.isoformat() if moved else None,
        )

    if drift.current_rows < spec.drift.min_rows:
        lead = (
            f"only {drift.current_rows} rows in the current window "
            f"(< minimum {spec.drift.min_rows}); not enough evidence"
        )
        return decision(NO_RETRAIN, lead)
    if drift.data_not_checked and not drift.detected:
        return decision(NO_RETRAIN, f"not checked: {drift.data_not_checked}")
    if not drift.detected:
        return decision(NO_RETRAIN, "no drift detected")
    if streak < spec.drift.consecutive_checks:
        lead = (
            f"drift seen in {streak} consecutive check(s); {spec.drift.consecutive_checks} required"
        )
        return decision(NO_RETRAIN, lead)
    if blocked := _cooldown(spec, drift, past, production, moved, as_of):
        return decision(NO_RETRAIN, blocked[1], blocked_by=blocked[0])
    if unresolved := _unresolved(drift, past, answers or {}, production):
        return decision(unresolved[0], unresolved[1], blocked_by="escalation")
    return decision(
        RETRAIN,
        f"{_what_drifted(spec, drift)} drifted for {streak} consecutive check(s) and no "
        "cooldown applies",
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
        "reference_kind": drift.reference_kind,
        "reference_hash": drift.reference_hash,
        "reference_start": drift.reference_start,
        "reference_end": drift.reference_end,
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
