"""Model registry on the artifact store: versions, aliases, promotion, rollback, audit trail.

Layout (the same on disk and in S3)::

    models/<name>/versions/<n>/claim.json      allocates n (put_if_absent: unique under races)
    models/<name>/versions/<n>/model.skops     the fitted pipeline
    models/<name>/versions/<n>/holdout.parquet its predictions on the holdout (evaluation reuses)
    models/<name>/versions/<n>/metadata.json   lineage; written last, marks the version complete
    models/<name>/versions/<n>/evaluation.json gate decision and metrics (written once)
    models/<name>/versions/<n>/status.json     candidate | rejected (moved by compare-and-swap)
    models/<name>/aliases/<alias>.json         current version + history, moved by CAS only
                                               (a history entry left by a rollback carries
                                               `"rolled_back": true`)
    models/<name>/audit/<time>_<id>.json       one immutable object per change

A version is `production` while the production alias points at it and `archived` once the alias
has moved on. Promotion commits by one compare-and-swap of the alias document, which also carries
the change's audit event; the event object is written right after and re-written (idempotently)
by the next change if the writer died in between, so no event is ever lost or duplicated.
Every change names its actor: the caller says who acts (the CLI's user, the run's trigger).
"""

from __future__ import annotations

import hashlib
import logging
import os
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from mlops_tasks.errors import (
    ConcurrentUpdateError,
    IntegrityError,
    NotFoundError,
    RegistryError,
)
from mlops_tasks.records import ModelVersion, VersionLineage, from_json, to_json
from mlops_tasks.storage import ArtifactStore, encode_json

log = logging.getLogger(__name__)

PRODUCTION = "production"
#: Module prefixes whose types a stored model may contain; anything else is refused.
TRUSTED_PREFIXES = ("sklearn.", "numpy.", "scipy.", "builtins.", "collections.", "mlops_tasks.")
_CAS_ATTEMPTS = 50


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class Registry:
    """The registry of every model in one artifact store."""

    def __init__(self, store: ArtifactStore) -> None:
        self.store = store

    # Keys ---------------------------------------------------------------------------------
    @staticmethod
    def _vkey(model: str, version: int, leaf: str) -> str:
        return f"models/{model}/versions/{version}/{leaf}"

    @staticmethod
    def _akey(model: str, alias: str) -> str:
        return f"models/{model}/aliases/{alias}.json"

    def version_uri(self, model: str, version: int, leaf: str) -> str:
        return self.store.uri_for(self._vkey(model, version, leaf))

    def read_file(self, model: str, version: int, leaf: str) -> bytes:
        """A file stored with a version at registration (e.g. its holdout predictions)."""
        return self.store.get_bytes(self._vkey(model, version, leaf))

    # Reading ------------------------------------------------------------------------------
    def models(self) -> list[str]:
        return self.store.list_dirs("models")

    def version_numbers(self, model: str) -> list[int]:
        """Complete versions (with metadata.json), ascending."""
        keys = self.store.list_keys(f"models/{model}/versions/")
        out = set()
        for k in keys:
            parts = k.split("/")
            if len(parts) == 5 and parts[4] == "metadata.json" and parts[3].isdigit():
                out.add(int(parts[3]))
        return sorted(out)

    def alias(self, model: str, alias: str = PRODUCTION) -> int | None:
        return _alias_version(self.alias_doc(model, alias))

    def alias_doc(self, model: str, alias: str = PRODUCTION) -> dict[str, Any] | None:
        doc, _ = self.store.read_json_versioned(self._akey(model, alias))
        return doc

    def _metadata(self, model: str, version: int) -> dict[str, Any]:
        try:
            meta: dict[str, Any] = self.store.get_json(self._vkey(model, version, "metadata.json"))
        except NotFoundError:
            raise NotFoundError(
                f"model {model!r} has no version {version} in {self.store.uri}",
                model=model,
                version=version,
            ) from None
        return meta

    def _evaluation(self, model: str, version: int) -> dict[str, Any] | None:
        try:
            out: dict[str, Any] = self.store.get_json(self._vkey(model, version, "evaluation.json"))
        except NotFoundError:
            return None
        return out

    def get_version(
        self, model: str, version: int, alias_doc: dict[str, Any] | None = None
    ) -> ModelVersion:
        """A version with its status and evaluation; `alias_doc` saves re-reading the alias."""
        meta = self._metadata(model, version)
        doc = alias_doc if alias_doc is not None else self.alias_doc(model)
        status = self._status(model, version, doc)
        return _parse_version(meta, status, self._evaluation(model, version))

    def _status(self, model: str, version: int, doc: dict[str, Any] | None) -> str:
        if doc and doc.get("version") == version:
            return PRODUCTION
        if doc and any(h["version"] == version for h in doc.get("history", [])):
            return "archived"
        stored, _ = self.store.read_json_versioned(self._vkey(model, version, "status.json"))
        return str(stored["status"]) if stored else "candidate"

    def production(self, model: str) -> ModelVersion | None:
        """The production version (one read of the alias), or None before the first."""
        doc = self.alias_doc(model)
        version = _alias_version(doc)
        return None if version is None else self.get_version(model, version, doc)

    def versions(self, model: str) -> list[ModelVersion]:
        doc = self.alias_doc(model)  # once, not once per version (each read is a request on S3)
        return [self.get_version(model, v, doc or {}) for v in self.version_numbers(model)]

    # Registering --------------------------------------------------------------------------
    def register(
        self,
        model: str,
        model_bytes: bytes,
        lineage: VersionLineage,
        actor: str,
        files: dict[str, bytes] | None = None,
    ) -> ModelVersion:
        """Store a new candidate version (and its `files`); the number is allocated atomically.

        Two concurrent registrations never get the same number: each claims `n` with
        `put_if_absent` and moves on to `n + 1` when someone else got there first.
        """
        existing = self.store.list_keys(f"models/{model}/versions/")
        taken = {int(k.split("/")[3]) for k in existing if k.split("/")[3].isdigit()}
        version = max(taken, default=0) + 1
        claim = encode_json({"claimed_at": now(), "by": actor, "pid": os.getpid()})
        while not self.store.put_if_absent(self._vkey(model, version, "claim.json"), claim):
            version += 1
        digest = sha256(model_bytes)
        self.store.put_bytes(self._vkey(model, version, "model.skops"), model_bytes)
        for leaf, data in (files or {}).items():
            self.store.put_bytes(self._vkey(model, version, leaf), data)
        meta = {
            **to_json(lineage),
            "name": model,
            "version": version,
            "model_sha256": digest,
            "model_bytes": len(model_bytes),
            "created_at": now(),
            "created_by": actor,
        }
        self.store.put_bytes(self._vkey(model, version, "metadata.json"), encode_json(meta))
        self.record_event(
            model,
            "register",
            actor=actor,
            to_version=version,
            reason=lineage.triggered_by.reason,
            details={"model_sha256": digest, "run_id": lineage.run_id},
        )
        log.info("registered %s v%d (%s)", model, version, digest[:12])
        return _parse_version(meta, "candidate", None)

    def record_evaluation(self, model: str, version: int, evaluation: dict[str, Any]) -> None:
        """Attach the gate decision and metrics to a version (idempotent for the same result)."""
        self._metadata(model, version)  # must exist
        self.store.put_json(self._vkey(model, version, "evaluation.json"), evaluation)

    def reject(self, model: str, version: int, reason: str, actor: str) -> None:
        """Mark a candidate rejected; it can never be promoted afterwards."""
        status = self._status(model, version, self.alias_doc(model))
        if status == "rejected":
            return
        if status != "candidate":
            raise RegistryError(
                f"{model} v{version} is {status}; only candidates can be rejected",
                model=model,
                version=version,
            )
        key = self._vkey(model, version, "status.json")
        _, token = self.store.read_json_versioned(key)
        self.store.compare_and_swap(
            key, {"status": "rejected", "reason": reason, "at": now()}, token
        )
        self.record_event(model, "reject", actor=actor, to_version=version, reason=reason)

    # Loading ------------------------------------------------------------------------------
    def load_bytes(self, model: str, version: int, expected_sha256: str | None = None) -> bytes:
        """The model artifact, after checking its SHA-256 against the metadata."""
        expected = expected_sha256 or self._metadata(model, version)["model_sha256"]
        key = self._vkey(model, version, "model.skops")
        data = self.store.get_bytes(key)
        if sha256(data) != expected:
            raise IntegrityError(
                f"{self.store.uri_for(key)}: SHA-256 {sha256(data)[:16]}... does not match the "
                f"registered {expected[:16]}...; refusing to load",
                model=model,
                version=version,
            )
        return data

    def load(self, model: str, version: int, expected_sha256: str | None = None) -> Any:
        """Load a verified model with skops (never pickle): checksum first, then types."""
        data = self.load_bytes(model, version, expected_sha256)
        return load_artifact(data, f"{model} v{version}")

    def load_production(self, model: str) -> tuple[int, Any]:
        version = self.alias(model)
        if version is None:
            raise NotFoundError(f"model {model!r} has no production version", model=model)
        return version, self.load(model, version)

    # Aliases ------------------------------------------------------------------------------
    def promote(
        self,
        model: str,
        version: int,
        reason: str,
        actor: str,
        details: dict[str, Any] | None = None,
        force: bool = False,
    ) -> dict[str, Any]:
        """Point `production` at `version`. Idempotent: promoting the current one is a no-op.

        Only a version whose evaluation passed its gate (or an archived one, which was in
        production before) can be promoted, and only if its artifact loads. `force` lets a
        person promote a candidate without a passed gate (never a rejected one); the audit
        event records that it was forced and why the gate did not vouch for it.
        """
        meta = self._metadata(model, version)
        ungated = self._check_promotable(model, version, force)
        self.load(model, version, meta["model_sha256"])  # never point production at junk
        if ungated:
            details = {**(details or {}), "forced": True, "ungated": ungated}
        return self._move(model, lambda _doc: version, "promote", reason, actor, details)

    def _check_promotable(self, model: str, version: int, force: bool = False) -> str | None:
        """Refuse a rejected version, and one whose gate did not pass unless `force`.

        Returns why the gate does not vouch for the version when `force` let it through.
        """
        stored, _ = self.store.read_json_versioned(self._vkey(model, version, "status.json"))
        if stored and stored.get("status") == "rejected":
            raise RegistryError(
                f"{model} v{version} was rejected and cannot be promoted",
                model=model,
                version=version,
            )
        doc = self.alias_doc(model)
        if doc and (
            doc.get("version") == version
            or any(h.get("version") == version for h in doc.get("history", []))
        ):
            return None  # it was in production before: a person already trusted it
        evaluation = self._evaluation(model, version)
        if evaluation is None:
            why = "has no gate result (evaluation.json is missing: its run never evaluated it)"
        elif not (evaluation.get("decision") or {}).get("passed"):
            why = "did not pass its evaluation gate"
        else:
            return None
        if force:
            return why
        raise RegistryError(
            f"{model} v{version} {why}; evaluate it with a retrain run, or promote it anyway "
            "with `mlops promote --force --reason ...` (recorded in the audit trail)",
            model=model,
            version=version,
        )

    def rollback(
        self, model: str, reason: str, actor: str, to: int | None = None
    ) -> dict[str, Any]:
        """Move production back to `to`, by default the previous production version.

        Without `to`, repeated rollbacks step back through the production history (v4 -> v3,
        then v3 -> v2, ...): the version left by a rollback is marked in the history and never
        chosen again by a later rollback without `to`.
        """

        def target(doc: dict[str, Any] | None) -> int:
            if not doc or doc.get("version") is None:
                raise RegistryError(
                    f"{model} has no production version to roll back from", model=model
                )
            if to is not None:
                return to
            return _previous_production(model, doc)

        if to is not None:
            self._metadata(model, to)
            self._check_promotable(model, to)
        return self._move(model, target, "rollback", reason, actor, None)

    def _move(
        self,
        model: str,
        target: Callable[[dict[str, Any] | None], int],
        action: str,
        reason: str,
        actor: str,
        details: dict[str, Any] | None,
    ) -> dict[str, Any]:
        key = self._akey(model, PRODUCTION)
        verified = None
        for _ in range(_CAS_ATTEMPTS):
            doc, token = self.store.read_json_versioned(key)
            if doc and doc.get("event"):
                self._persist_event(doc["event"])  # finish a predecessor that died mid-way
            version = target(doc)
            if action == "rollback" and version != verified:
                self.load(model, version)  # never point production at something unloadable
                verified = version
            previous = doc.get("version") if doc else None
            if previous == version:
                return {"model": model, "version": version, "previous": previous, "changed": False}
            event = self._event(model, action, actor, reason, previous, version, details)
            history = [*(doc.get("history", []) if doc else [])]
            if previous is not None:
                left: dict[str, Any] = {"version": previous, "until": event["at"]}
                if action == "rollback":
                    left["rolled_back"] = True  # a later rollback never returns to it
                history.append(left)
            new_doc = {"version": version, "since": event["at"], "event": event, "history": history}
            try:
                self.store.compare_and_swap(key, new_doc, token)
            except ConcurrentUpdateError:
                continue
            self._persist_event(event)
            log.info("%s %s: production v%s -> v%d", action, model, previous, version)
            return {
                "model": model,
                "version": version,
                "previous": previous,
                "changed": True,
                "event_id": event["event_id"],
            }
        raise ConcurrentUpdateError(
            f"{model}: production alias kept changing; gave up after {_CAS_ATTEMPTS} attempts",
            model=model,
        )

    # Audit --------------------------------------------------------------------------------
    def _event(
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

    def _persist_event(self, event: dict[str, Any]) -> None:
        stamp = event["at"].replace(":", "").replace("-", "")
        key = f"models/{event['model']}/audit/{stamp}_{event['event_id']}.json"
        self.store.put_if_absent(key, encode_json(event))

    def record_event(
        self,
        model: str,
        action: str,
        actor: str,
        reason: str = "",
        from_version: int | None = None,
        to_version: int | None = None,
        details: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Append one immutable audit event (for changes that are not alias moves)."""
        event = self._event(model, action, actor, reason, from_version, to_version, details)
        self._persist_event(event)
        return event

    def audit(self, model: str, action: str | None = None) -> list[dict[str, Any]]:
        """Every audit event of a model, oldest first."""
        doc = self.alias_doc(model)
        if doc and doc.get("event"):
            self._persist_event(doc["event"])
        events = [self.store.get_json(k) for k in self.store.list_keys(f"models/{model}/audit/")]
        return [e for e in events if action is None or e["action"] == action]


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


def _alias_version(doc: dict[str, Any] | None) -> int | None:
    return int(doc["version"]) if doc and doc.get("version") is not None else None


def _parse_version(
    meta: dict[str, Any], status: str, evaluation: dict[str, Any] | None
) -> ModelVersion:
    return from_json(ModelVersion, {**meta, "status": status, "evaluation": evaluation})


def dump_artifact(obj: Any) -> bytes:
    import skops.io as sio

    data: bytes = sio.dumps(obj)
    return data


def load_artifact(data: bytes, what: str) -> Any:
    """Load skops bytes, refusing any type outside the trusted module prefixes."""
    import skops.io as sio

    try:
        types = sio.get_untrusted_types(data=data)
    except Exception as err:  # a corrupt archive fails in zipfile/json with many error types
        raise IntegrityError(f"{what}: not a readable skops artifact: {err}") from err
    untrusted = [t for t in types if not t.startswith(TRUSTED_PREFIXES)]
    if untrusted:
        raise IntegrityError(
            f"{what}: artifact contains untrusted types {untrusted}; refusing to load",
            types=untrusted,
        )
    return sio.loads(data, trusted=types)
