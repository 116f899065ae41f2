"""Model registry on the artifact store: versions, aliases, promotion, rollback, audit trail.

Layout (the same on disk and in S3)::

    models/<name>/versions/<n>/claim.json      allocates n (put_if_absent: unique under races)
    models/<name>/versions/<n>/model.skops     the fitted pipeline
    models/<name>/versions/<n>/metadata.json   lineage; written last, marks the version complete
    models/<name>/versions/<n>/evaluation.json gate decision and metrics (written once)
    models/<name>/versions/<n>/status.json     candidate | rejected (moved by compare-and-swap)
    models/<name>/aliases/<alias>.json         current version + history, moved by CAS only
    models/<name>/audit/<time>_<id>.json       one immutable object per change

A version is `production` while the production alias points at it and `archived` once the alias
has moved on. Promotion commits by one compare-and-swap of the alias document, which also carries
the change's audit event; the event object is written right after and re-written (idempotently)
by the next change if the writer died in between, so no event is ever lost or duplicated.
"""

from __future__ import annotations

import getpass
import hashlib
import logging
import os
import subprocess
import uuid
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path
from typing import Any

from mlops_tasks import __version__
from mlops_tasks.artifacts import TRUSTED_TYPES, dump_artifact, load_artifact  # noqa: F401 (API)
from mlops_tasks.errors import (
    ConcurrentUpdateError,
    IntegrityError,
    NotFoundError,
    RegistryError,
)
from mlops_tasks.storage import ArtifactStore, encode_json, open_store

log = logging.getLogger(__name__)

PRODUCTION = "production"
_CAS_ATTEMPTS = 50


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def current_actor() -> str:
    """Who is acting: `MLOPS_ACTOR`, else the OS user."""
    if actor := os.environ.get("MLOPS_ACTOR"):
        return actor
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


def trigger_actor(triggered_by: dict[str, Any]) -> str:
    """Who a triggered change is recorded as: the person, else what started it."""
    return str(triggered_by.get("user") or f"airflow:{triggered_by.get('kind', 'unknown')}")


@lru_cache(maxsize=1)
def code_version() -> dict[str, str | None]:
    """The package version and, when available, the git commit it runs from."""
    sha = os.environ.get("MLOPS_GIT_SHA")
    if not sha:
        try:
            out = subprocess.run(
                ["git", "rev-parse", "HEAD"],
                cwd=Path(__file__).resolve().parent,
                capture_output=True,
                text=True,
                timeout=5,
                check=False,
            )
            sha = out.stdout.strip() or None
        except (OSError, subprocess.SubprocessError):
            sha = None
    return {"package": __version__, "git_sha": sha}


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class Registry:
    """The registry of every model in one artifact store."""

    def __init__(self, store: ArtifactStore | None = None) -> None:
        self.store = store or open_store()

    # Keys ---------------------------------------------------------------------------------
    @staticmethod
    def _vkey(model: str, version: int, leaf: str) -> str:
        return f"models/{model}/versions/{version}/{leaf}"

    @staticmethod
    def _akey(model: str, alias: str) -> str:
        return f"models/{model}/aliases/{alias}.json"

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
        doc = self.alias_doc(model, alias)
        return int(doc["version"]) if doc and doc.get("version") is not None else None

    def alias_doc(self, model: str, alias: str = PRODUCTION) -> dict[str, Any] | None:
        doc, _ = self.store.read_json_versioned(self._akey(model, alias))
        return doc

    def get_version(
        self, model: str, version: int, _alias_doc: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """Metadata merged with evaluation and the current status."""
        try:
            meta: dict[str, Any] = self.store.get_json(self._vkey(model, version, "metadata.json"))
        except NotFoundError:
            raise NotFoundError(
                f"model {model!r} has no version {version} in {self.store.uri}",
                model=model,
                version=version,
            ) from None
        evaluation_key = self._vkey(model, version, "evaluation.json")
        if self.store.exists(evaluation_key):
            meta["evaluation"] = self.store.get_json(evaluation_key)
        meta["status"] = self._status(model, version, _alias_doc)
        return meta

    def _status(self, model: str, version: int, doc: dict[str, Any] | None = None) -> str:
        doc = doc or self.alias_doc(model)
        if doc and doc.get("version") == version:
            return PRODUCTION
        if doc and any(h["version"] == version for h in doc.get("history", [])):
            return "archived"
        stored, _ = self.store.read_json_versioned(self._vkey(model, version, "status.json"))
        return str(stored["status"]) if stored else "candidate"

    def versions(self, model: str) -> list[dict[str, Any]]:
        doc = self.alias_doc(model)  # once, not once per version (each read is a request on S3)
        return [self.get_version(model, v, doc) for v in self.version_numbers(model)]

    # Registering --------------------------------------------------------------------------
    def register(
        self,
        model: str,
        model_bytes: bytes,
        lineage: dict[str, Any],
        actor: str | None = None,
    ) -> dict[str, Any]:
        """Store a new candidate version; the number is allocated atomically.

        Two concurrent registrations never get the same number: each claims `n` with
        `put_if_absent` and moves on to `n + 1` when someone else got there first.
        """
        actor = actor or current_actor()
        existing = self.store.list_keys(f"models/{model}/versions/")
        taken = {int(k.split("/")[3]) for k in existing if k.split("/")[3].isdigit()}
        version = max(taken, default=0) + 1
        claim = encode_json({"claimed_at": now(), "by": actor, "pid": os.getpid()})
        while not self.store.put_if_absent(self._vkey(model, version, "claim.json"), claim):
            version += 1
        digest = sha256(model_bytes)
        self.store.put_bytes(self._vkey(model, version, "model.skops"), model_bytes)
        meta = {
            **lineage,
            "name": model,
            "version": version,
            "model_sha256": digest,
            "model_bytes": len(model_bytes),
            "code_version": code_version(),
            "created_at": now(),
            "created_by": actor,
        }
        self.store.put_bytes(self._vkey(model, version, "metadata.json"), encode_json(meta))
        self.record_event(
            model,
            "register",
            actor=actor,
            to_version=version,
            reason=str(lineage.get("triggered_by", {}).get("reason", "")),
            details={"model_sha256": digest, "run_id": lineage.get("airflow_run_id")},
        )
        log.info("registered %s v%d (%s)", model, version, digest[:12])
        return {**meta, "status": "candidate"}

    def record_evaluation(self, model: str, version: int, evaluation: dict[str, Any]) -> None:
        """Attach the gate decision and metrics to a version (idempotent for the same result)."""
        self.get_version(model, version)  # must exist
        self.store.put_json(self._vkey(model, version, "evaluation.json"), evaluation)

    def reject(self, model: str, version: int, reason: str, actor: str | None = None) -> None:
        """Mark a candidate rejected; it can never be promoted afterwards."""
        status = self._status(model, version)
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
    def load_bytes(self, model: str, version: int) -> bytes:
        """The model artifact, after checking its SHA-256 against the metadata."""
        meta = self.get_version(model, version)
        data = self.store.get_bytes(self._vkey(model, version, "model.skops"))
        if sha256(data) != meta["model_sha256"]:
            raise IntegrityError(
                f"{self.store.uri_for(self._vkey(model, version, 'model.skops'))}: SHA-256 "
                f"{sha256(data)[:16]}... does not match the registered {meta['model_sha256'][:16]}"
                "...; refusing to load",
                model=model,
                version=version,
            )
        return data

    def load(self, model: str, version: int | None = None) -> Any:
        """Load a verified model (default: the production version) with skops, never pickle."""
        if version is None:
            version = self.alias(model)
            if version is None:
                raise NotFoundError(f"model {model!r} has no production version", model=model)
        return load_artifact(self.load_bytes(model, version), f"{model} v{version}")

    # Aliases ------------------------------------------------------------------------------
    def promote(
        self,
        model: str,
        version: int,
        reason: str,
        actor: str | None = None,
        details: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Point `production` at `version`. Idempotent: promoting the current one is a no-op."""
        meta = self.get_version(model, version)
        if meta["status"] == "rejected":
            raise RegistryError(
                f"{model} v{version} was rejected and cannot be promoted",
                model=model,
                version=version,
            )
        self.load(model, version)  # never point production at something that cannot load
        return self._move(model, lambda _doc: version, "promote", reason, actor, details)

    def rollback(
        self,
        model: str,
        to: int | None = None,
        reason: str = "",
        actor: str | None = None,
    ) -> dict[str, Any]:
        """Move production back to `to`, by default the previous production version."""

        def target(doc: dict[str, Any] | None) -> int:
            if not doc or doc.get("version") is None:
                raise RegistryError(
                    f"{model} has no production version to roll back from", model=model
                )
            if to is not None:
                return to
            current = doc["version"]
            for entry in reversed(doc.get("history", [])):
                if entry["version"] != current:
                    return int(entry["version"])
            raise RegistryError(
                f"{model} has no earlier production version than v{current}", model=model
            )

        if to is not None and self.get_version(model, to)["status"] == "rejected":
            raise RegistryError(f"{model} v{to} was rejected; cannot roll back to it", model=model)
        return self._move(model, target, "rollback", reason, actor, None)

    def _move(
        self,
        model: str,
        target: Any,
        action: str,
        reason: str,
        actor: str | None,
        details: dict[str, Any] | None,
    ) -> dict[str, Any]:
        actor = actor or current_actor()
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
                return {"model": model, "version": version, "changed": False}
            event = self._event(model, action, actor, reason, previous, version, details)
            history = [*(doc.get("history", []) if doc else [])]
            if previous is not None:
                history.append({"version": previous, "until": event["at"]})
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
        actor: str | None,
        reason: str,
        from_version: int | None,
        to_version: int | None,
        details: dict[str, Any] | None,
    ) -> dict[str, Any]:
        return {
            "event_id": uuid.uuid4().hex,
            "model": model,
            "action": action,
            "actor": actor or current_actor(),
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
        actor: str | None = None,
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
