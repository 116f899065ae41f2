"""A model's production alias: reading it, and moving it by compare-and-swap (promotion,
rollback, repair from the audit trail).

A move commits by one compare-and-swap of the alias document, which also carries the move's
audit event; the event is appended to the audit trail right after, and appended (once) by the
next change or reader if the writer died in between (`finish_move`), so no event is lost or
duplicated. A history entry left by a rollback carries `"rolled_back": true`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from mlops_tasks.errors import ConcurrentUpdateError, IntegrityError, RegistryError
from mlops_tasks.records import AliasEntry, ProductionAlias, ProductionChange
from mlops_tasks.registry._common import (
    _ALIAS_MOVES,
    _CAS_ATTEMPTS,
    PRODUCTION,
    check_reason,
    sha256,
)
from mlops_tasks.registry.audit import AuditTrail
from mlops_tasks.registry.signatures import Signatures
from mlops_tasks.registry.versions import Versions
from mlops_tasks.storage import ArtifactStore, encode_json

log = logging.getLogger("mlops_tasks.registry")


class Aliases:
    """Reads and moves the production aliases of a store's models."""

    def __init__(
        self, store: ArtifactStore, sig: Signatures, trail: AuditTrail, versions: Versions
    ) -> None:
        self.store = store
        self.sig = sig
        self.trail = trail
        self.versions = versions

    @staticmethod
    def key(model: str, alias: str) -> str:
        return f"models/{model}/aliases/{alias}.json"

    # Reading ------------------------------------------------------------------------------
    def doc(self, model: str, alias: str = PRODUCTION) -> dict[str, Any] | None:
        """The alias document; IntegrityError (with the repair command) when it is corrupt."""
        doc, _ = self.read(model, alias)
        return doc

    def read(self, model: str, alias: str = PRODUCTION) -> tuple[dict[str, Any] | None, str | None]:
        """The alias document and its token (see `doc`)."""
        key = self.key(model, alias)
        repair = (
            f"repair it with `mlops repair-alias {model} --reason ...` (rebuilds it from the "
            "audit trail; add --to N to choose the version)"
        )
        try:
            doc, token = self.store.read_json_versioned(key)
        except IntegrityError as err:
            uri = self.store.uri_for(key)
            raise IntegrityError(f"{err}; {repair}", model=model, uri=uri) from None
        if doc is not None and (
            problem := _alias_shape_problem(doc) or self.sig.signature_problem(doc, model)
        ):
            uri = self.store.uri_for(key)
            raise IntegrityError(
                f"{uri}: not a valid alias document ({problem}); {repair}", model=model, uri=uri
            )
        return doc, token

    def production(self, model: str) -> ProductionAlias | None:
        """The production alias as a record (None before the first promotion)."""
        return _alias_record(self.doc(model))

    def rollback_target(self, model: str) -> int | None:
        """The version `rollback` without `to` would put in production now (None: none)."""
        doc = self.doc(model)
        if not doc or doc.get("version") is None:
            return None
        try:
            return _previous_production(model, doc)
        except RegistryError:
            return None

    # Moving -------------------------------------------------------------------------------
    def promote(
        self,
        model: str,
        version: int,
        reason: str,
        actor: str,
        details: dict[str, Any] | None = None,
        force: bool = False,
        expected: int | None = None,
    ) -> ProductionChange:
        """See `Registry.promote`."""
        reason = check_reason(reason, f"promoting {model} v{version}")
        meta = self.versions.metadata(model, version)
        ungated = self.check_promotable(model, version, force)
        # Never point production at something that cannot load.
        self.versions.load(model, version, meta)
        if ungated:
            details = {**(details or {}), "forced": True, "ungated": ungated}

        def target(doc: dict[str, Any] | None) -> int:
            _check_expected(model, doc, expected)
            return version

        return self._move(model, target, "promote", reason, actor, details)

    def check_promotable(
        self,
        model: str,
        version: int,
        force: bool = False,
        was_production: set[int | None] | None = None,
        forcing: str = "mlops promote --force --reason ...",
    ) -> str | None:
        """Refuse a rejected version, and one whose gate did not pass unless `force`.

        `was_production`: the versions that were in production before (default: as the alias
        records them); `forcing`: the command that would force it, for the message. Returns
        why the gate does not vouch for the version when `force` let it through.
        """
        stored, _ = self.versions.doc(model, version, "status.json")
        if stored and stored.get("status") == "rejected":
            raise RegistryError(
                f"{model} v{version} was rejected and cannot be promoted",
                model=model,
                version=version,
            )
        if was_production is None:
            doc = self.doc(model) or {}
            was_production = {doc.get("version"), *(h["version"] for h in doc.get("history", []))}
        if version in was_production:
            return None  # it was in production before: a person already trusted it
        evaluation = self.versions.evaluation(model, version)
        if evaluation is None:
            why = "has no gate result (evaluation.json is missing: its run never evaluated it)"
        elif not (evaluation.get("decision") or {}).get("passed"):
            why = "did not pass its evaluation gate"
        else:
            return None
        if force:
            return why
        raise RegistryError(
            f"{model} v{version} {why}; evaluate it with a retrain run, or put it in "
            f"production anyway with `{forcing}` (recorded in the audit trail)",
            model=model,
            version=version,
        )

    def rollback(
        self,
        model: str,
        reason: str,
        actor: str,
        to: int | None = None,
        expected: int | None = None,
        details: dict[str, Any] | None = None,
    ) -> ProductionChange:
        """See `Registry.rollback`."""
        reason = check_reason(reason, f"rolling back {model}")

        def target(doc: dict[str, Any] | None) -> int:
            if not doc or doc.get("version") is None:
                raise RegistryError(
                    f"{model} has no production version to roll back from", model=model
                )
            _check_expected(model, doc, expected)
            if to is not None:
                return to
            return _previous_production(model, doc)

        if to is not None:
            self.versions.metadata(model, to)
            self.check_promotable(model, to)
        return self._move(model, target, "rollback", reason, actor, details)

    def withdraw(
        self,
        model: str,
        version: int,
        reason: str,
        actor: str,
        details: dict[str, Any] | None = None,
    ) -> ProductionChange:
        """See `Registry.withdraw`."""
        reason = check_reason(reason, f"withdrawing {model} v{version} from production")
        key = self.key(model, PRODUCTION)
        for _ in range(_CAS_ATTEMPTS):
            doc, token = self.read(model)
            self.finish_move(model, doc)
            current = _alias_version(doc)
            if current != version or doc is None:  # production moved on: nothing to withdraw
                return ProductionChange(model, current, current, changed=False)
            event = self.trail.event(model, "withdraw", actor, reason, version, None, details)
            history = [*doc.get("history", []), _left(version, event)]
            after = self.trail.chain_tail(model)
            try:
                self.store.compare_and_swap(key, self._moved(event, None, history, after), token)
            except ConcurrentUpdateError:
                continue
            self.trail.append(model, event, after=after)
            log.warning("withdraw %s: production v%d -> none", model, version)
            return ProductionChange(model, None, version, True, event["event_id"])
        raise ConcurrentUpdateError(
            f"{model}: production alias kept changing; gave up after {_CAS_ATTEMPTS} attempts",
            model=model,
        )

    def _move(
        self,
        model: str,
        target: Callable[[dict[str, Any] | None], int],
        action: str,
        reason: str,
        actor: str,
        details: dict[str, Any] | None,
    ) -> ProductionChange:
        key = self.key(model, PRODUCTION)
        verified = None
        for _ in range(_CAS_ATTEMPTS):
            doc, token = self.read(model)
            self.finish_move(model, doc)  # a predecessor may have died before its event
            version = target(doc)
            if action == "rollback" and version != verified:
                self.versions.load(model, version)  # never point production at the unloadable
                verified = version
            previous = doc.get("version") if doc else None
            if previous == version:
                return ProductionChange(model, version, previous, changed=False)
            event = self.trail.event(model, action, actor, reason, previous, version, details)
            history = [*(doc.get("history", []) if doc else [])]
            if previous is not None:
                history.append(_left(previous, event))
            after = self.trail.chain_tail(model)
            try:
                self.store.compare_and_swap(key, self._moved(event, version, history, after), token)
            except ConcurrentUpdateError:
                continue
            self.trail.append(model, event, after=after)
            log.info("%s %s: production v%s -> v%d", action, model, previous, version)
            return ProductionChange(model, version, previous, True, event["event_id"])
        raise ConcurrentUpdateError(
            f"{model}: production alias kept changing; gave up after {_CAS_ATTEMPTS} attempts",
            model=model,
        )

    def _moved(
        self,
        event: dict[str, Any],
        version: int | None,
        history: list[dict[str, Any]],
        after: int,
    ) -> dict[str, Any]:
        """The signed alias document a move writes: its version, its event (appended to the
        trail after event `after`, the chain's tail when it was written) and the versions
        before it."""
        return self.sig.signed(
            {
                "version": version,
                "since": event["at"],
                "event": event,
                "event_after_seq": after,
                "history": history,
            }
        )

    def repair(
        self,
        model: str,
        reason: str,
        actor: str,
        to: int | None = None,
        force: bool = False,
    ) -> ProductionChange:
        """See `Registry.repair_alias`."""
        reason = check_reason(reason, f"repairing the production alias of {model}")
        key = self.key(model, PRODUCTION)
        raw, token = self.store.read_bytes_versioned(key)
        try:
            doc, token = self.read(model)
            self.finish_move(model, doc)
        except IntegrityError:
            doc = None
        events = self.trail.events(model)
        replayed, replayed_history = _replay(events)
        version = to if to is not None else replayed
        if version is None:
            raise RegistryError(
                f"the audit trail of {model} has no promotion to rebuild production from; "
                "name the version with --to",
                model=model,
            )
        meta = self.versions.metadata(model, version)
        if not any(
            e.get("action") == "register" and e.get("to_version") == version for e in events
        ):
            raise RegistryError(
                f"{model} v{version} has no register event in the audit trail (a version folder "
                "copied into the store?); it is never put in production",
                model=model,
                version=version,
            )
        ungated = self.check_promotable(
            model,
            version,
            force,
            was_production={replayed, *(h["version"] for h in replayed_history)},
            forcing=f"mlops repair-alias {model} --to {version} --force --reason ...",
        )
        self.versions.load(model, version, meta)
        details: dict[str, Any] = {
            "source": "explicit version" if to is not None else "audit trail",
            "replaced_sha256": sha256(raw) if raw is not None else None,
        }
        if ungated:
            details.update(forced=True, ungated=ungated)
        previous = _alias_version(doc)
        event = self.trail.event(model, "repair_alias", actor, reason, previous, version, details)
        current, history = _replay([*events, event])
        after = self.trail.chain_tail(model)
        self.store.compare_and_swap(key, self._moved(event, current, history, after), token)
        self.trail.append(model, event, after=after)
        log.warning("repaired %s production alias: v%s (%s)", model, version, details["source"])
        return ProductionChange(model, version, previous, True, event["event_id"])

    def finish_move(self, model: str, doc: dict[str, Any] | None) -> None:
        """Append the event of the alias's last move if its writer died before doing so (a
        process that only checks signatures leaves that to the next one that can sign)."""
        event = doc.get("event") if doc else None
        keys = self.sig.keys
        if not event or doc is None or (keys is not None and not keys.can_sign):
            return
        if "event_after_seq" in doc:
            self.trail.append(model, event, after=int(doc["event_after_seq"]))
        else:  # an alias written before the chain: its event went to a legacy key
            stamp = event["at"].replace(":", "").replace("-", "")
            key = f"models/{model}/audit/{stamp}_{event['event_id']}.json"
            self.store.put_if_absent(key, encode_json(event))


def _left(version: int, event: dict[str, Any]) -> dict[str, Any]:
    """The history entry of the version an alias move leaves."""
    entry: dict[str, Any] = {"version": version, "until": event["at"]}
    if event["action"] in ("rollback", "withdraw"):
        entry["rolled_back"] = True  # a later rollback without a target never returns to it
    return entry


def _replay(events: list[dict[str, Any]]) -> tuple[int | None, list[dict[str, Any]]]:
    """The production version and history that a model's alias-moving events produce."""
    current: int | None = None
    history: list[dict[str, Any]] = []
    for event in events:
        if event.get("action") not in _ALIAS_MOVES:
            continue
        to = event.get("to_version")
        if current is not None and current != to:
            history.append(_left(current, event))
        current = to
    return current, history


def _alias_problems(model: str, doc: dict[str, Any], events: list[dict[str, Any]]) -> list[str]:
    """Where the production alias disagrees with what the audit trail's moves produce."""
    version, history = _replay(events)
    problems = []
    if doc.get("version") != version:
        problems.append(
            f"{model}: the production alias says v{doc.get('version')} but the audit trail "
            f"says v{version} (the alias was moved without an event; "
            f"`mlops repair-alias {model}` restores the audited state)"
        )

    def steps(entries: list[dict[str, Any]]) -> list[tuple[int, bool]]:
        return [(h["version"], bool(h.get("rolled_back"))) for h in entries]

    if steps(doc.get("history", [])) != steps(history):
        problems.append(
            f"{model}: the production alias's history {steps(doc.get('history', []))} does not "
            f"match the audit trail's {steps(history)}"
        )
    moves = [e for e in events if e.get("action") in _ALIAS_MOVES]
    event = doc.get("event")
    if event and (not moves or moves[-1].get("event_id") != event.get("event_id")):
        problems.append(
            f"{model}: the production alias's last move {event.get('event_id')} is not the "
            "audit trail's last promote/rollback/repair/withdraw event"
        )
    return problems


def _check_expected(model: str, doc: dict[str, Any] | None, expected: int | None) -> None:
    """Refuse a change made on a view of production that is no longer true."""
    current = doc.get("version") if doc else None
    if expected is not None and current != expected:
        raise RegistryError(
            f"{model}: production is {f'v{current}' if current else 'unset'} now, not "
            f"v{expected} as when the change was asked for; nothing was changed (look again, "
            "then decide)",
            model=model,
            expected=expected,
            current=current,
        )


def _previous_production(model: str, doc: dict[str, Any]) -> int:
    """The version a rollback without a target returns to: the newest earlier production
    version, skipping the current one and every version whose latest departure from
    production was itself a rollback (so repeated rollbacks keep stepping back)."""
    current = doc["version"]
    history = doc.get("history", [])
    left_by_rollback = {int(h["version"]): bool(h.get("rolled_back")) for h in history}
    for entry in reversed(history):
        version = int(entry["version"])
        if version != current and not left_by_rollback[version]:
            return version
    raise RegistryError(
        f"{model} has no earlier production version than v{current} that was not rolled "
        "back from; name one with --to",
        model=model,
    )


def _alias_shape_problem(doc: Any) -> str | None:
    """What is wrong with the shape of an alias document, None when nothing is."""
    if not isinstance(doc, dict):
        return f"a JSON {type(doc).__name__}, not an object"
    version = doc.get("version")
    if version is not None and (not isinstance(version, int) or isinstance(version, bool)):
        return f"version {version!r} is not a version number"
    history = doc.get("history", [])
    if not isinstance(history, list) or not all(
        isinstance(h, dict) and isinstance(h.get("version"), int) for h in history
    ):
        return "history is not a list of {version: N} entries"
    if doc.get("event") is not None and not isinstance(doc["event"], dict):
        return "event is not an object"
    return None


def _alias_version(doc: dict[str, Any] | None) -> int | None:
    return int(doc["version"]) if doc and doc.get("version") is not None else None


def _alias_record(doc: dict[str, Any] | None) -> ProductionAlias | None:
    """The record of an alias document whose shape was checked (`_alias_shape_problem`)."""
    if doc is None:
        return None
    history = tuple(
        AliasEntry(int(h["version"]), h.get("until"), bool(h.get("rolled_back")))
        for h in doc.get("history", [])
    )
    event = doc.get("event")
    return ProductionAlias(
        version=_alias_version(doc),
        since=doc.get("since"),
        history=history,
        event=event if isinstance(event, dict) else None,
    )
