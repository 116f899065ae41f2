"""The audit trail of one model: a hash chain of immutable events, and its head.

Event `seq` claims `models/<name>/audit/<seq>.json` with put_if_absent and records the SHA-256
of event `seq - 1`'s stored bytes; `audit_head.json` anchors the newest event (number and
SHA-256) and moves forward by compare-and-swap, so deleting the newest events shows. With a key
each event and the head are signed (`Signatures`). Events written before the chain
(`audit/<time>_<id>.json`) are still read, oldest first.
"""

from __future__ import annotations

import json
import logging
import re
import uuid
from collections.abc import Callable
from typing import Any

from mlops_tasks.errors import ConcurrentUpdateError, IntegrityError, NotFoundError, StoreError
from mlops_tasks.registry._common import (
    _AUDIT_ATTEMPTS,
    _CAS_ATTEMPTS,
    _RESTORE,
    now,
    sha256,
)
from mlops_tasks.registry.signatures import _SIGNATURE_PROBLEMS, Signatures
from mlops_tasks.storage import ArtifactStore, Token, encode_json

log = logging.getLogger("mlops_tasks.registry")


class AuditTrail:
    """Appends to and reads the audit trails of a store's models."""

    def __init__(self, store: ArtifactStore, sig: Signatures) -> None:
        self.store = store
        self.sig = sig

    # Audit --------------------------------------------------------------------------------
    def event(
        self,
        model: str,
        action: str,
        actor: str,
        reason: str,
        from_version: int | None,
        to_version: int | None,
        details: dict[str, Any] | None,
    ) -> dict[str, Any]:
        return {
            "event_id": uuid.uuid4().hex,
            "model": model,
            "action": action,
            "actor": actor,
            "at": now(),
            "reason": reason,
            "from_version": from_version,
            "to_version": to_version,
            "details": details or {},
        }

    @staticmethod
    def seq_key(model: str, seq: int) -> str:
        return f"models/{model}/audit/{seq:010d}.json"

    def chain(self, model: str) -> tuple[dict[int, str], list[str]]:
        """Chained event keys by sequence number, and legacy (pre-chain) event keys."""
        prefix = f"models/{model}/audit/"
        chain: dict[int, str] = {}
        legacy: list[str] = []
        for key in self.store.list_keys(prefix):
            name = key[len(prefix) :]
            if "/" in name or not name.endswith(".json"):
                continue
            stem = name.removesuffix(".json")
            if stem.isdigit():
                chain[int(stem)] = key
            else:
                legacy.append(key)  # `<time>_<id>.json`, written before the chain existed
        return chain, sorted(legacy)

    def chain_tail(self, model: str) -> int:
        return max(self.chain(model)[0], default=0)

    # The head: the newest event, anchored -------------------------------------------------
    @staticmethod
    def head_key(model: str) -> str:
        return f"models/{model}/audit_head.json"

    def read_head(self, model: str) -> tuple[dict[str, Any] | None, Token | None, str | None]:
        """The trail's head document, its token, and what is wrong with it (None when it is
        sound); (None, None, None) when there is none."""
        key = self.head_key(model)
        raw, token = self.store.read_bytes_versioned(key)
        if raw is None:
            return None, None, None
        uri = self.store.uri_for(key)
        try:
            doc = self.store.decode_json(key, raw)
        except IntegrityError as err:
            return None, token, f"{err}; " + _RESTORE.format(model=model)
        problem = _head_shape_problem(model, doc) or self.sig.signature_problem(doc, model)
        if problem:
            return None, token, f"{uri}: not a valid audit head ({problem})"
        return doc, token, None

    def move_head(
        self,
        model: str,
        seq: int,
        digest: str | None,
        stored: Callable[[int, str], bytes],
    ) -> None:
        """Anchor event `seq` (SHA-256 `digest`) as the newest of the trail, by compare-and-swap.

        The head only moves forward, and only from a head that still matches the trail: one
        that names a deleted or replaced event, or (with a key) is not validly signed, is left
        as it is for `verify` to report, never overwritten. Anchoring is not the change the
        caller asked for, which is stored already: a failure is logged, and the next append
        moves the head past this event.
        """
        key = self.head_key(model)
        for _ in range(_CAS_ATTEMPTS):
            doc, token, problem = self.read_head(model)
            if problem is None and doc is not None:
                if doc["seq"] >= seq:
                    return  # a later append anchored it (the chain is linear)
                problem = self.head_mismatch(model, doc, stored)
            if problem is not None:
                log.warning("%s; not moving it (`mlops verify %s` reports it)", problem, model)
                return
            head = {"model": model, "seq": seq, "sha256": digest, "at": now()}
            try:
                self.store.compare_and_swap(key, self.sig.signed(head), token)
                return
            except ConcurrentUpdateError:
                continue  # another writer moved it: look again
            except StoreError as err:
                log.warning("%s: could not anchor audit event %d: %s", model, seq, err)
                return
        log.warning("%s: the audit head kept changing; event %d is not anchored yet", model, seq)

    def head_mismatch(
        self, model: str, head: dict[str, Any], stored: Callable[[int, str], bytes]
    ) -> str | None:
        """What is wrong when the event the head anchors is no longer in the trail as it was."""
        seq = int(head["seq"])
        if seq == 0:
            return None
        uri = self.store.uri_for(self.head_key(model))
        try:
            data = stored(seq, self.seq_key(model, seq))
        except NotFoundError:
            return (
                f"{uri}: anchors audit event {seq} as the newest, and it is missing (the newest "
                "events were deleted?)"
            )
        if sha256(data) != head["sha256"]:
            return (
                f"{uri}: the SHA-256 it records for audit event {seq}, the newest it anchors, "
                "does not match that event (replaced, or the chain rebuilt?)"
            )
        return None

    def append(self, model: str, event: dict[str, Any], after: int | None = None) -> dict[str, Any]:
        """Append `event` to the model's hash chain and return it as stored.

        Each event claims `audit/<seq>.json` with put_if_absent, where seq follows the newest
        event, and records the SHA-256 of that event's stored bytes; a writer that loses the
        race reads the new tail and tries the next number, so concurrent appends stay linear.
        With `after` (the tail seen before an alias move committed), an event already
        appended after that point is not appended again: finishing a move is idempotent.
        """
        seen: dict[int, bytes] = {}

        def stored(seq: int, key: str) -> bytes:
            if seq not in seen:
                seen[seq] = self.store.get_bytes(key)
            return seen[seq]

        def ours(seq: int, key: str) -> bool:
            """Whether `key` holds this very event (a write whose response was lost)."""
            seen.pop(seq, None)
            try:
                found = _parse_event(stored(seq, key))
            except NotFoundError:
                return False
            return found is not None and found.get("event_id") == event["event_id"]

        head_missing = self.read_head(model) == (None, None, None)
        for _ in range(_AUDIT_ATTEMPTS):
            chain, _legacy = self.chain(model)
            tail = max(chain, default=0)
            if after is not None:
                for seq in range(after + 1, tail + 1):
                    found = _parse_event(stored(seq, chain[seq])) if seq in chain else None
                    if found and found.get("event_id") == event["event_id"]:
                        return found
            prev = sha256(stored(tail, chain[tail])) if tail in chain else None
            if head_missing:  # anchor what is there first: an anchored event implies a head
                self.move_head(model, tail, prev, stored)
                head_missing = False
            chained = self.sig.signed(
                {**event, "seq": tail + 1, "prev_sha256": prev, "anchored": True}
            )
            key, data = self.seq_key(model, tail + 1), encode_json(chained)
            try:
                created = self.store.put_if_absent(key, data)
            except StoreError as err:
                # The store may have taken the write and lost its answer: then it is done.
                if not err.retryable or not ours(tail + 1, key):
                    raise
                log.warning(
                    "%s: audit event %d was stored, its reply lost: %s", model, tail + 1, err
                )
                created = True
            # A put whose response was lost is retried by the S3 client; the retry finds the
            # key taken (by this event) and reports a lost race. Never append it twice.
            if created or ours(tail + 1, key):
                self.move_head(model, tail + 1, sha256(data), stored)
                return chained
        raise ConcurrentUpdateError(
            f"{model}: could not append to the audit trail after {_AUDIT_ATTEMPTS} attempts",
            model=model,
        )

    def read_event(self, key: str, data: bytes | None = None) -> dict[str, Any]:
        event = _parse_event(self.store.get_bytes(key) if data is None else data)
        if event is None:
            uri = self.store.uri_for(key)
            raise IntegrityError(
                f"{uri}: not a valid audit event (corrupt JSON or no action); "
                "`mlops verify` lists every problem; restore it from a backup",
                uri=uri,
            )
        return event

    def events(self, model: str) -> list[dict[str, Any]]:
        """Every event, oldest first; with a key, IntegrityError naming the first event that
        no signature vouches for (see `_signature_problems`)."""
        chain, legacy = self.chain(model)
        stored = {k: self.store.get_bytes(k) for k in [*legacy, *(chain[s] for s in sorted(chain))]}
        events = [self.read_event(k, data) for k, data in stored.items()]
        by_seq = {seq: stored[key] for seq, key in chain.items()}
        legacy_bytes = {k: stored[k] for k in legacy}
        if problems := self.signature_problems(model, chain, by_seq, legacy_bytes):
            more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
            raise IntegrityError(
                f"{problems[0]}{more}; `mlops verify {model}` lists every problem",
                model=model,
                problems=problems,
            )
        return events

    def signature_problems(
        self,
        model: str,
        chain: dict[int, str],
        data: dict[int, bytes],
        legacy: dict[str, bytes],
    ) -> list[str]:
        """With a key: the audit events no signature vouches for.

        A validly signed event vouches for itself and, through the hash chain, for every event
        before it, so only events after the newest validly signed one are at fault (appended
        by someone without the key). Events from before the chain are vouched for by the
        SHA-256 that `mlops sign` recorded of each in a signed event.
        """
        if self.sig.keys is None or not chain:
            return []
        signers: dict[int, str] = {}
        vouched_legacy: dict[str, str] = {}
        for seq in sorted(data):
            event = _parse_event(data[seq])
            if event is None or event.get("model") != model:
                signers[seq] = "unknown"
                continue
            signers[seq] = self.sig.doc_signer(event)
            if signers[seq] in ("current", "previous"):
                vouched_legacy.update((event.get("details") or {}).get("legacy_sha256") or {})
        valid = [seq for seq, who in signers.items() if who in ("current", "previous")]
        if not valid:
            uri = self.store.uri_for(chain[max(chain)])
            who = "unsigned" if all(w == "unsigned" for w in signers.values()) else "unknown"
            what = {"unsigned": "no event is signed", "unknown": "no event is validly signed"}
            return [
                f"{uri}: the audit trail of {model} is not vouched for ({what[who]}): "
                + _SIGNATURE_PROBLEMS[who].format(model=model)
            ]
        problems = [
            f"{self.store.uri_for(chain[seq])}: audit event {seq} is "
            + _SIGNATURE_PROBLEMS.get(signers.get(seq, "unsigned"), "not valid").format(model=model)
            for seq in sorted(chain)
            if seq > max(valid)
        ]
        prefix = f"models/{model}/audit/"
        for key, raw in legacy.items():
            if vouched_legacy.get(key[len(prefix) :]) != sha256(raw):
                problems.append(
                    f"{self.store.uri_for(key)}: an event from before the hash chain that no "
                    f"signed event vouches for (added or edited since `mlops sign {model}`?)"
                )
        return problems

    def head_problems(
        self, model: str, chain: dict[int, str], stored: dict[int, bytes]
    ) -> list[str]:
        """What is wrong with the trail's head: missing while events were anchored by it, not
        valid, or anchoring an event that was deleted or replaced."""
        doc, _, problem = self.read_head(model)
        if problem is not None:
            return [problem]
        uri = self.store.uri_for(self.head_key(model))
        tail = max(chain, default=0)
        if doc is None:
            anchored = [
                seq for seq in sorted(stored) if (_parse_event(stored[seq]) or {}).get("anchored")
            ]
            if not anchored:
                return []  # a trail written before heads existed
            return [
                f"{uri} is missing (deleted?), though audit events from {anchored[0]} on were "
                "anchored by it: the newest events may have been deleted with it; "
                + _RESTORE.format(model=model)
            ]
        if doc["seq"] > tail:
            return [
                f"{uri}: anchors audit event {doc['seq']} as the newest, but the trail ends at "
                f"event {tail}: events {tail + 1} to {doc['seq']} are missing (deleted?)"
            ]

        def read(seq: int, _key: str) -> bytes:
            if seq not in stored:
                raise NotFoundError(f"audit event {seq} is missing", model=model)
            return stored[seq]

        mismatch = self.head_mismatch(model, doc, read)
        return [mismatch] if mismatch else []

    def verify_chain(
        self, chain: dict[int, str], problems: list[str]
    ) -> tuple[list[dict[str, Any]], dict[int, bytes]]:
        """The chain's events (appending what is wrong to `problems`) and their bytes."""
        events: list[dict[str, Any]] = []
        stored: dict[int, bytes] = {}
        prev_bytes: bytes | None = None
        for seq in range(1, max(chain, default=0) + 1):
            if seq not in chain:
                problems.append(f"audit event {seq} is missing (deleted?)")
                prev_bytes = None
                continue
            uri = self.store.uri_for(chain[seq])
            data = stored[seq] = self.store.get_bytes(chain[seq])
            event = _parse_event(data)
            if event is None:
                problems.append(f"{uri}: not a valid audit event")
            else:
                events.append(event)
                expected = sha256(prev_bytes) if prev_bytes is not None else None
                if event.get("seq") != seq:
                    problems.append(f"{uri}: records seq {event.get('seq')}, stored as {seq}")
                if seq > 1 and prev_bytes is not None and event.get("prev_sha256") != expected:
                    problems.append(
                        f"{uri}: the SHA-256 it records for event {seq - 1} does not match that "
                        f"event (event {seq - 1} was edited or replaced)"
                    )
                if seq == 1 and event.get("prev_sha256") is not None:
                    problems.append(f"{uri}: the first event names a predecessor")
            prev_bytes = data
        return events, stored


def _duplicate_problems(model: str, events: list[dict[str, Any]]) -> list[str]:
    """Events that carry the same event id: one change appended more than once."""
    where: dict[str, list[str]] = {}
    for event in events:
        if isinstance(event.get("event_id"), str):
            seq = event.get("seq")
            where.setdefault(event["event_id"], []).append(
                str(seq) if seq is not None else "one from before the chain"
            )
    return [
        f"{model}: audit events {', '.join(at)} carry the same event id {event_id}: one change "
        f"was appended {len(at)} times (a retried write?)"
        for event_id, at in where.items()
        if len(at) > 1
    ]


def _head_shape_problem(model: str, doc: Any) -> str | None:
    """What is wrong with the shape of an audit head, None when nothing is."""
    if not isinstance(doc, dict):
        return f"a JSON {type(doc).__name__}, not an object"
    if doc.get("model") != model:
        return f"it is the head of {doc.get('model')!r}, not of {model!r}"
    seq, digest = doc.get("seq"), doc.get("sha256")
    if type(seq) is not int or seq < 0:
        return f"seq {seq!r} is not an event number"
    if seq == 0 and digest is None:
        return None
    if not isinstance(digest, str) or not re.fullmatch(r"[0-9a-f]{64}", digest):
        return f"sha256 {digest!r} is not a SHA-256"
    return None


def _parse_event(data: bytes) -> dict[str, Any] | None:
    try:
        event = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None
    if not isinstance(event, dict) or not isinstance(event.get("action"), str):
        return None
    return event
