"""Model registry on the artifact store: versions, aliases, promotion, rollback, audit trail.

Layout (the same on disk and in S3)::

    models/<name>/versions/<n>/claim.json      allocates n (put_if_absent: unique under races)
    models/<name>/versions/<n>/model.skops     the fitted pipeline
    models/<name>/versions/<n>/holdout.parquet its predictions on the holdout (evaluation reuses)
    models/<name>/versions/<n>/profile.json    what training saw per feature (`profile.py`)
    models/<name>/versions/<n>/spec.json       the spec it was trained with (`reproduce.py`)
    models/<name>/versions/<n>/metadata.sig    signature of metadata.json, bound to <name> and <n>
                                               (signing key only)
    models/<name>/versions/<n>/metadata.json   lineage; written last, marks the version complete
    models/<name>/versions/<n>/evaluation.json gate decision and metrics (written once)
    models/<name>/versions/<n>/status.json     candidate | rejected (moved by compare-and-swap)
    models/<name>/aliases/<alias>.json         current version + history, moved by CAS only
                                               (a history entry left by a rollback carries
                                               `"rolled_back": true`)
    models/<name>/audit/<seq>.json             one immutable object per change, hash-chained

A version is `production` while the production alias points at it and `archived` once the alias
has moved on. Promotion commits by one compare-and-swap of the alias document, which also carries
the change's audit event; the event is appended to the audit trail right after, and appended
(once) by the next change or reader if the writer died in between, so no event is lost or
duplicated.

The audit trail is a hash chain per model: event `seq` claims `audit/<seq>.json` with
put_if_absent and records the SHA-256 of event `seq - 1`'s stored bytes (its canonical JSON),
so concurrent writers append linearly and `verify` detects an edited or deleted event, an
alias moved without an event, and an artifact or metadata replaced after registration.
Events written before the chain (`audit/<time>_<id>.json`) are still read, oldest first.
Every change names its actor: the caller says who acts (the CLI's user, the run's trigger).

A version is what its folder says it is: its metadata records its own model name and version
number, and a version is only read (loaded, shown, served, promoted) from the folder of that
model and number, so a folder copied over another version's or another model's is refused
with or without a key.

With a signing key (`MLOPS_SIGNING_KEY`, carried by the store `Settings.open_store` opens),
registering writes to `metadata.sig` an HMAC-SHA256 that binds the model name, the version
number, the file name and the SHA-256 of the metadata's bytes (the metadata holds the SHA-256
of the artifact and of every file stored with it); a version's `status.json` and
`evaluation.json` carry such a bound HMAC of their canonical JSON in `signature` (see
`_binding`), and the alias and every audit event an HMAC of their canonical JSON. A signed
event covers its seq and predecessor hash, so it vouches for the chain before it. Every read
checks them and refuses an unsigned or wrongly signed document with IntegrityError, so whoever
can write the store but does not hold the key can no longer replace an artifact with its
checksum, serve one version's folder as another's, point production elsewhere, forge a gate
result or rewrite the trail. Keys in `MLOPS_SIGNING_PREVIOUS_KEYS` are accepted too, and
`sign(rotate=True)` re-signs what they signed with the current key. A version file signed under
the old scheme (its content alone) is refused until `sign` binds it. Without a key, nothing is
signed or checked (the metadata's own name and version still are).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from mlops_tasks.artifacts import TRUSTED_TYPES, dump_artifact, load_artifact  # noqa: F401 (API)
from mlops_tasks.errors import (
    ConcurrentUpdateError,
    IntegrityError,
    MlopsError,
    NotFoundError,
    RegistryError,
    StoreError,
    UsageError,
)
from mlops_tasks.records import ModelVersion, VersionLineage, from_json, to_json
from mlops_tasks.storage import ArtifactStore, Token, encode_json

log = logging.getLogger(__name__)

PRODUCTION = "production"
_RESTORE = (
    "restore the object from a backup (docs/operations.md); `mlops verify {model}` lists "
    "every problem of this model"
)
_CAS_ATTEMPTS = 50
_AUDIT_ATTEMPTS = 200
#: Audit actions that move the production alias (replayed to check and repair it).
_ALIAS_MOVES = ("promote", "rollback", "repair_alias")
#: The fewest characters (blanks around it do not count) of the reason that every change of
#: production, and a quarantined batch's release, must give: what the Models view asks too.
MIN_REASON = 3


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def check_reason(reason: Any, change: str) -> str:
    """The reason given for `change` without the blanks around it; UsageError when there is
    none or it is shorter than `MIN_REASON` characters. The audit trail keeps the reason, and
    an empty one tells whoever reads it nothing."""
    text = reason.strip() if isinstance(reason, str) else ""
    if len(text) < MIN_REASON:
        raise UsageError(
            f"{change} needs a reason of at least {MIN_REASON} characters, not counting "
            f"blanks (it is kept in the audit trail); got {reason!r}",
            reason=reason,
        )
    return text


class Registry:
    """The registry of every model in one artifact store."""

    def __init__(self, store: ArtifactStore) -> None:
        self.store = store
        #: The keys that sign and check (`signing.Keyring`); None: nothing signed or checked.
        #: A keyring of public keys only checks, and every change is refused (`_sign`).
        self.keys = store.keyring

    # Signatures ---------------------------------------------------------------------------
    def _sign(self, data: bytes) -> str:
        assert self.keys is not None
        return self.keys.sign(data)

    def _signer(self, data: bytes, given: Any) -> str:
        """Who signed `data` with signature `given`: "current" (the signing key), "previous"
        (a key accepted during a rotation), "unsigned", or "unknown" (no accepted key)."""
        assert self.keys is not None
        return self.keys.who(data, given)

    def _signed(self, doc: dict[str, Any]) -> dict[str, Any]:
        """A JSON document (alias, status, evaluation, audit event) with its signature over
        its canonical JSON without the signature (unchanged without a key)."""
        if self.keys is None:
            return doc
        return {**doc, "signature": self._sign(encode_json(_unsigned(doc)))}

    def _doc_signer(self, doc: dict[str, Any]) -> str:
        content = _unsigned(doc)
        who = self._signer(encode_json(content), doc.get("signature"))
        if who == "unknown" and (legacy := _encoded_with_non_finite(content)) is not None:
            who = self._signer(
                legacy, doc.get("signature")
            )  # signed before `encode_json` nulled them
        return who

    def _file_signature(self, model: str, version: int, leaf: str, content: bytes) -> str:
        """The signature of a version's file: bound to its model, version number and name."""
        return _BOUND + self._sign(_binding(model, version, leaf, content))

    def _file_signer(self, model: str, version: int, leaf: str, content: bytes, given: Any) -> str:
        """Who signed version file `leaf` of `model` v`version` (`content`: the bytes the
        signature covers) with `given`: as `_signer`, and "legacy" for a signature of the old
        scheme that an accepted key made.

        The old scheme signed the content alone, so the same file in another version's or
        another model's folder verified too. Such a signature is not accepted as vouching for
        anything: it is reported as "legacy", which every read refuses and `mlops sign`
        re-signs bound to the folder (only when the metadata there names that model and
        version). Accepting it would have left the gate results and statuses, which do not
        name their version, replayable from one version to another.
        """
        if not isinstance(given, str) or not given:
            return "unsigned"
        if given.startswith(_BOUND):
            who = self._signer(_binding(model, version, leaf, content), given[len(_BOUND) :])
            return "unknown" if who == "unsigned" else who
        return "legacy" if self._signer(content, given) in ("current", "previous") else "unknown"

    def _signed_version_doc(
        self, model: str, version: int, leaf: str, doc: dict[str, Any]
    ) -> dict[str, Any]:
        """A version's `status.json` or `evaluation.json` with its bound signature (unchanged
        without a key)."""
        if self.keys is None:
            return doc
        content = encode_json(_unsigned(doc))
        return {**doc, "signature": self._file_signature(model, version, leaf, content)}

    def _version_doc_signer(self, model: str, version: int, leaf: str, doc: dict[str, Any]) -> str:
        content = _unsigned(doc)
        given = doc.get("signature")
        who = self._file_signer(model, version, leaf, encode_json(content), given)
        if who == "unknown" and (legacy := _encoded_with_non_finite(content)) is not None:
            who = self._file_signer(model, version, leaf, legacy, given)
        return who

    def _signature_problem(self, doc: dict[str, Any], model: str = "MODEL") -> str | None:
        if self.keys is None:
            return None
        return _SIGNATURE_PROBLEMS.get(self._doc_signer(doc), "").format(model=model) or None

    def _metadata_signature_problem(self, model: str, version: int, raw: bytes) -> str | None:
        """With a key: what is wrong with the signature of the metadata read from the folder
        of `model` v`version` (None when a current or previous key signed it for that folder)."""
        if self.keys is None:
            return None
        key = self._vkey(model, version, "metadata.sig")
        uri = self.version_uri(model, version, "metadata.json")
        sig, _ = self.store.read_bytes_versioned(key)
        given = sig.decode("ascii", "replace").strip() if sig is not None else None
        who = self._file_signer(model, version, "metadata.json", raw, given)
        if who in ("current", "previous"):
            return None
        if who == "unsigned":
            return (
                f"{uri}: not signed ({self.store.uri_for(key)} is missing) and a signing key is "
                f"configured; refusing it (written before the key? `mlops sign {model}`)"
            )
        if who == "legacy":
            return f"{uri}: " + _FILE_SIGNATURE_PROBLEMS["legacy"].format(model=model)
        return (
            f"{uri}: its signature does not match (edited, copied from another version's "
            "folder, or signed with another key); refusing it; " + _RESTORE.format(model=model)
        )

    def _claims_problem(self, model: str, version: int, meta: dict[str, Any]) -> str | None:
        """What is wrong when the metadata read from the folder of `model` v`version` names
        another model or version (None when it names this one). Checked with or without a
        key: the folder decides where a version is served from, the metadata what it is."""
        name, number = meta.get("name"), meta.get("version")
        if name == model and type(number) is int and number == version:
            return None
        uri = self.version_uri(model, version, "metadata.json")
        if isinstance(name, str) and type(number) is int:
            claim = f"claims to be {name} v{number}"
        else:
            claim = f"does not name its model and version (name {name!r}, version {number!r})"
        return (
            f"{uri}: {claim} but was found as {model} v{version} (a version folder copied "
            "over another, or replayed?); refusing it; " + _RESTORE.format(model=model)
        )

    def _version_doc(
        self, model: str, version: int, leaf: str
    ) -> tuple[dict[str, Any] | None, str | None]:
        """A version's `status.json` or `evaluation.json` without its signature, and its
        token; with a key, IntegrityError naming the file when it is unsigned or forged."""
        key = self._vkey(model, version, leaf)
        doc, token = self.store.read_json_versioned(key)
        if doc is None:
            return None, None
        uri = self.store.uri_for(key)
        if not isinstance(doc, dict):
            raise IntegrityError(
                f"{uri}: a JSON {type(doc).__name__}, not an object; "
                + _RESTORE.format(model=model),
                model=model,
                version=version,
                uri=uri,
            )
        if self.keys is not None:
            who = self._version_doc_signer(model, version, leaf, doc)
            if problem := _FILE_SIGNATURE_PROBLEMS.get(who, "").format(model=model):
                raise IntegrityError(
                    f"{uri}: refused, {problem}", model=model, version=version, uri=uri
                )
        return _unsigned(doc), token

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
        """A file stored with a version at registration (e.g. the holdout predictions its gate
        is computed from), after checking it against the SHA-256 in the version's metadata
        (signed with a key). A version registered before metadata recorded them is read as is.
        """
        return self._checked_file(model, version, leaf, self._metadata(model, version))

    def _checked_file(self, model: str, version: int, leaf: str, meta: dict[str, Any]) -> bytes:
        """`read_file` against metadata already read (and checked by the caller)."""
        key = self._vkey(model, version, leaf)
        data = self.store.get_bytes(key)
        expected = (meta.get("files_sha256") or {}).get(leaf)
        if expected is not None and sha256(data) != expected:
            uri = self.store.uri_for(key)
            raise IntegrityError(
                f"{uri}: SHA-256 {sha256(data)[:16]}... does not match the {expected[:16]}... "
                "its version's metadata recorded; refusing it; " + _RESTORE.format(model=model),
                model=model,
                version=version,
                uri=uri,
            )
        return data

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
        """The alias document; IntegrityError (with the repair command) when it is corrupt."""
        doc, _ = self._read_alias(model, alias)
        return doc

    def _read_alias(
        self, model: str, alias: str = PRODUCTION
    ) -> tuple[dict[str, Any] | None, str | None]:
        key = self._akey(model, alias)
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
            problem := _alias_shape_problem(doc) or self._signature_problem(doc, model)
        ):
            uri = self.store.uri_for(key)
            raise IntegrityError(
                f"{uri}: not a valid alias document ({problem}); {repair}", model=model, uri=uri
            )
        return doc, token

    def _metadata(self, model: str, version: int) -> dict[str, Any]:
        """A version's metadata, only when it names this model and version and (with a key)
        its signature was made for this folder: IntegrityError naming the file otherwise."""
        meta, raw = self._read_metadata(model, version)
        if problems := self._metadata_problems(model, version, meta, raw):
            uri = self.version_uri(model, version, "metadata.json")
            raise IntegrityError(
                problems[0],
                model=model,
                version=version,
                uri=uri,
                claimed_model=meta.get("name"),
                claimed_version=meta.get("version"),
                problems=problems,
            )
        return meta

    def _metadata_problems(
        self, model: str, version: int, meta: dict[str, Any], raw: bytes
    ) -> list[str]:
        """Why the metadata read from the folder of `model` v`version` is not that version's:
        it names another (with or without a key), and its signature (with a key)."""
        return [
            p
            for p in (
                self._claims_problem(model, version, meta),
                self._metadata_signature_problem(model, version, raw),
            )
            if p is not None
        ]

    def _read_metadata(self, model: str, version: int) -> tuple[dict[str, Any], bytes]:
        """A version's metadata and its bytes, checked for shape only (see `_metadata`)."""
        key = self._vkey(model, version, "metadata.json")
        try:
            raw = self.store.get_bytes(key)
            meta = self.store.decode_json(key, raw)
        except NotFoundError:
            raise NotFoundError(
                f"model {model!r} has no version {version} in {self.store.uri}",
                model=model,
                version=version,
            ) from None
        except IntegrityError as err:
            raise IntegrityError(f"{err}; {_RESTORE.format(model=model)}", model=model) from None
        if not isinstance(meta, dict) or not isinstance(meta.get("model_sha256"), str):
            uri = self.store.uri_for(key)
            raise IntegrityError(
                f"{uri}: not a version's metadata (no model_sha256); "
                + _RESTORE.format(model=model),
                model=model,
                version=version,
                uri=uri,
            )
        return meta, raw

    def _evaluation(self, model: str, version: int) -> dict[str, Any] | None:
        return self._version_doc(model, version, "evaluation.json")[0]

    def get_version(
        self, model: str, version: int, alias_doc: dict[str, Any] | None = None
    ) -> ModelVersion:
        """A version with its status and evaluation; `alias_doc` saves re-reading the alias."""
        meta = self._metadata(model, version)
        doc = alias_doc if alias_doc is not None else self.alias_doc(model)
        status = self._status(model, version, doc)
        try:
            return _parse_version(meta, status, self._evaluation(model, version))
        except ValidationError as err:
            uri = self.version_uri(model, version, "metadata.json")
            raise IntegrityError(
                f"{uri}: metadata does not match the version schema: "
                f"{err.error_count()} error(s), first: {err.errors()[0]['msg']} at "
                f"{'.'.join(map(str, err.errors()[0]['loc']))}; " + _RESTORE.format(model=model),
                model=model,
                version=version,
                uri=uri,
            ) from None

    def _status(self, model: str, version: int, doc: dict[str, Any] | None) -> str:
        if doc and doc.get("version") == version:
            return PRODUCTION
        if doc and any(h["version"] == version for h in doc.get("history", [])):
            return "archived"
        stored, _ = self._version_doc(model, version, "status.json")
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
        `put_if_absent` and moves on to `n + 1` when someone else got there first. When a
        write fails (disk full, read-only store), the claim and what was written are removed,
        so the next registration takes the same number: a failed write leaves no gap.
        """
        existing = self.store.list_keys(f"models/{model}/versions/")
        taken = {int(k.split("/")[3]) for k in existing if k.split("/")[3].isdigit()}
        version = max(taken, default=0) + 1
        claim = encode_json({"claimed_at": now(), "by": actor, "pid": os.getpid()})
        while not self.store.put_if_absent(self._vkey(model, version, "claim.json"), claim):
            version += 1
        digest = sha256(model_bytes)
        meta = {
            **to_json(lineage),
            "name": model,
            "version": version,
            "model_sha256": digest,
            "model_bytes": len(model_bytes),
            # Covered by the metadata's signature: the holdout predictions the gate reads.
            "files_sha256": {leaf: sha256(data) for leaf, data in (files or {}).items()},
            "created_at": now(),
            "created_by": actor,
        }
        written = [self._vkey(model, version, "claim.json")]
        try:
            for leaf, data in [("model.skops", model_bytes), *(files or {}).items()]:
                written.append(self._vkey(model, version, leaf))
                self.store.put_bytes(written[-1], data)
            if self.keys is not None:  # before metadata.json, which completes the version
                written.append(self._vkey(model, version, "metadata.sig"))
                signature = self._file_signature(model, version, "metadata.json", encode_json(meta))
                self.store.put_bytes(written[-1], signature.encode())
            written.append(self._vkey(model, version, "metadata.json"))
            self.store.put_bytes(written[-1], encode_json(meta))
        except Exception:
            self._release(model, version, written)
            raise
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

    def _release(self, model: str, version: int, keys: list[str]) -> None:
        """Give a version number back after a failed write, so no gap is left behind."""
        try:
            for key in reversed(keys):  # metadata first: the version is never half-complete
                self.store.delete(key)
        except MlopsError as err:  # the store refuses even deletes; the first error matters
            log.warning("could not release %s v%d after a failed write: %s", model, version, err)
        else:
            log.warning("released %s v%d after a failed write", model, version)

    def record_evaluation(self, model: str, version: int, evaluation: dict[str, Any]) -> None:
        """Attach the gate decision and metrics to a version (idempotent for the same result)."""
        self._metadata(model, version)  # must exist
        key = self._vkey(model, version, "evaluation.json")
        self.store.put_json(
            key, self._signed_version_doc(model, version, "evaluation.json", evaluation)
        )

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
        _, token = self._version_doc(model, version, "status.json")
        rejected = {"status": "rejected", "reason": reason, "at": now()}
        signed = self._signed_version_doc(model, version, "status.json", rejected)
        self.store.compare_and_swap(key, signed, token)
        self.record_event(model, "reject", actor=actor, to_version=version, reason=reason)

    # Loading ------------------------------------------------------------------------------
    def load_bytes(self, model: str, version: int, expected_sha256: str) -> bytes:
        """The model artifact, after checking its SHA-256 against the registered one."""
        key = self._vkey(model, version, "model.skops")
        data = self.store.get_bytes(key)
        if sha256(data) != expected_sha256:
            raise IntegrityError(
                f"{self.store.uri_for(key)}: SHA-256 {sha256(data)[:16]}... does not match the "
                f"registered {expected_sha256[:16]}...; refusing to load",
                model=model,
                version=version,
            )
        return data

    def load(
        self, model: str, version: int, meta: dict[str, Any] | ModelVersion | None = None
    ) -> Any:
        """Load a verified model with skops (never pickle): its checksum first, then every
        type in it against the allow-list of its own estimator family."""
        if meta is None:
            meta = self._metadata(model, version)
        fields = meta.to_json() if isinstance(meta, ModelVersion) else meta
        data = self.load_bytes(model, version, str(fields["model_sha256"]))
        return load_artifact(data, f"{model} v{version}", fields.get("estimator"))

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
        expected: int | None = None,
    ) -> dict[str, Any]:
        """Point `production` at `version`. Idempotent: promoting the current one is a no-op.

        Only a version whose evaluation passed its gate (or an archived one, which was in
        production before) can be promoted, and only if its artifact loads. `force` lets a
        person promote a candidate without a passed gate (never a rejected one); the audit
        event records that it was forced and why the gate did not vouch for it. `expected`:
        the production version the caller saw; if production has moved since, nothing changes.
        """
        reason = check_reason(reason, f"promoting {model} v{version}")
        meta = self._metadata(model, version)
        ungated = self._check_promotable(model, version, force)
        self.load(model, version, meta)  # never point production at something that cannot load
        if ungated:
            details = {**(details or {}), "forced": True, "ungated": ungated}

        def target(doc: dict[str, Any] | None) -> int:
            _check_expected(model, doc, expected)
            return version

        return self._move(model, target, "promote", reason, actor, details)

    def _check_promotable(
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
        stored, _ = self._version_doc(model, version, "status.json")
        if stored and stored.get("status") == "rejected":
            raise RegistryError(
                f"{model} v{version} was rejected and cannot be promoted",
                model=model,
                version=version,
            )
        if was_production is None:
            doc = self.alias_doc(model) or {}
            was_production = {doc.get("version"), *(h["version"] for h in doc.get("history", []))}
        if version in was_production:
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
            f"{model} v{version} {why}; evaluate it with a retrain run, or put it in "
            f"production anyway with `{forcing}` (recorded in the audit trail)",
            model=model,
            version=version,
        )

    def rollback_target(self, model: str) -> int | None:
        """The version `rollback` without `to` would put in production now (None: none)."""
        doc = self.alias_doc(model)
        if not doc or doc.get("version") is None:
            return None
        try:
            return _previous_production(model, doc)
        except RegistryError:
            return None

    def rollback(
        self,
        model: str,
        reason: str,
        actor: str,
        to: int | None = None,
        expected: int | None = None,
    ) -> dict[str, Any]:
        """Move production back to `to`, by default the previous production version.

        Without `to`, repeated rollbacks step back through the production history (v4 -> v3,
        then v3 -> v2, ...): the version left by a rollback is marked in the history and never
        chosen again by a later rollback without `to`. `expected`: the production version the
        caller saw (a page, a script); if production has moved since, nothing changes, so a
        form sent twice rolls back once.
        """
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
            doc, token = self._read_alias(model)
            self._finish_move(model, doc)  # a predecessor may have died before its event
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
                history.append(_left(previous, event))
            after = self._chain_tail(model)
            new_doc = {
                "version": version,
                "since": event["at"],
                "event": event,
                "event_after_seq": after,
                "history": history,
            }
            try:
                self.store.compare_and_swap(key, self._signed(new_doc), token)
            except ConcurrentUpdateError:
                continue
            self._append(model, event, after=after)
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

    def repair_alias(
        self,
        model: str,
        reason: str,
        actor: str,
        to: int | None = None,
        force: bool = False,
    ) -> dict[str, Any]:
        """Rewrite a corrupt (or out-of-band moved) production alias, audited.

        The version and history are rebuilt by replaying the audit trail's promote, rollback
        and repair events; `to` chooses the version instead. The alias is replaced by
        compare-and-swap against the bytes read, so a concurrent change is never overwritten.

        The version must pass what `promote` checks: its metadata names its folder (and is
        signed, with a key), it is not rejected, it passed its gate or the audit trail shows
        it in production before (the alias being repaired is not trusted for that), and it
        loads. It must also have a `register` event, so a folder copied into the store is
        never put in production. `force` lets an ungated version through (never a rejected or
        unregistered one); the event records that it was forced, as a forced promotion's does.
        """
        reason = check_reason(reason, f"repairing the production alias of {model}")
        key = self._akey(model, PRODUCTION)
        raw, token = self.store.read_bytes_versioned(key)
        try:
            doc, token = self._read_alias(model)
            self._finish_move(model, doc)
        except IntegrityError:
            doc = None
        events = self._events(model)
        replayed, replayed_history = _replay(events)
        version = to if to is not None else replayed
        if version is None:
            raise RegistryError(
                f"the audit trail of {model} has no promotion to rebuild production from; "
                "name the version with --to",
                model=model,
            )
        meta = self._metadata(model, version)
        if not any(
            e.get("action") == "register" and e.get("to_version") == version for e in events
        ):
            raise RegistryError(
                f"{model} v{version} has no register event in the audit trail (a version folder "
                "copied into the store?); it is never put in production",
                model=model,
                version=version,
            )
        ungated = self._check_promotable(
            model,
            version,
            force,
            was_production={replayed, *(h["version"] for h in replayed_history)},
            forcing=f"mlops repair-alias {model} --to {version} --force --reason ...",
        )
        self.load(model, version, meta)
        details: dict[str, Any] = {
            "source": "explicit version" if to is not None else "audit trail",
            "replaced_sha256": sha256(raw) if raw is not None else None,
        }
        if ungated:
            details.update(forced=True, ungated=ungated)
        previous = _alias_version(doc)
        event = self._event(model, "repair_alias", actor, reason, previous, version, details)
        current, history = _replay([*events, event])
        after = self._chain_tail(model)
        new_doc = {
            "version": current,
            "since": event["at"],
            "event": event,
            "event_after_seq": after,
            "history": history,
        }
        self.store.compare_and_swap(key, self._signed(new_doc), token)
        self._append(model, event, after=after)
        log.warning("repaired %s production alias: v%s (%s)", model, version, details["source"])
        return {"model": model, "version": version, "previous": previous, "changed": True}

    def sign(self, model: str, reason: str, actor: str, rotate: bool = False) -> dict[str, Any]:
        """Sign what was written before the signing key was configured, audited; with
        `rotate`, also re-sign with the current key what a previous key signed.

        Only a registry that verifies cleanly without signatures (audit chain, alias, every
        artifact against its metadata and register event) is signed, and only when no
        document carries a signature that matches no accepted key (tampering, or a key no
        longer accepted): such a document stops the command before anything is written, and
        is never re-signed. `metadata.sig` is created (never overwritten, except by a
        rotation from a previous key); the alias, `status.json` and `evaluation.json` are
        replaced by compare-and-swap. Audit events are immutable and hash-chained: the `sign`
        event, signed with the current key, vouches for every event before it (and records
        the SHA-256 of each event from before the chain). Signing blesses the store as it is
        now, so run it when you trust it.

        A version file signed under the old scheme (its content alone, by an accepted key) is
        re-signed bound to its folder (`rebound`), and only when the folder's metadata names
        that model and version: the registry must verify first, which checks that for every
        version, and `_sign_document` checks it again for the folder it signs.
        """
        if self.keys is None:
            raise UsageError("no signing key is configured (MLOPS_SIGNING_KEY); nothing to sign")
        if not self.keys.can_sign:
            raise UsageError(
                "only public keys are configured (MLOPS_VERIFY_KEYS): signing needs the "
                "private key in MLOPS_SIGNING_KEY"
            )
        plain = Registry(self.store)
        plain.keys = None
        problems = plain.verify(model)["problems"]
        if problems:
            raise IntegrityError(
                f"{model}: refusing to sign a registry that does not verify "
                f"({len(problems)} problem(s), `mlops verify {model}` lists them): {problems[0]}",
                model=model,
                problems=problems,
            )
        plan = self._signing_plan(model)
        unknown = [
            self.store.uri_for(key) for key, (_, state) in plan.items() if state == "unknown"
        ]
        if unknown:
            raise IntegrityError(
                f"{model}: refusing to sign: {len(unknown)} document(s) carry a signature that "
                "matches no accepted key (edited, or signed with a key that is no longer in "
                f"MLOPS_SIGNING_PREVIOUS_KEYS); nothing was signed: {', '.join(unknown)}",
                model=model,
                problems=unknown,
            )
        done: dict[str, list[Any]] = {"versions": [], "evaluations": [], "statuses": []}
        rebound: dict[str, list[Any]] = {"versions": [], "evaluations": [], "statuses": []}
        rotated: list[str] = []
        alias_signed = audit_signed = head_signed = False
        for key, (kind, state) in plan.items():
            if not (state in ("unsigned", "legacy") or (rotate and state == "previous")):
                continue
            if kind != "audit" and not self._sign_document(key, kind, state):
                continue
            if state == "previous":
                rotated.append(key)
            elif state == "legacy":
                rebound[kind].append(int(key.split("/")[3]))
            elif kind == "alias":
                alias_signed = True
            elif kind == "head":
                head_signed = True
            elif kind == "audit":
                audit_signed = True
            else:
                done[kind].append(int(key.split("/")[3]))
        signed_any = alias_signed or audit_signed or head_signed or bool(rotated)
        if any(done.values()) or any(rebound.values()) or signed_any:
            details: dict[str, Any] = {**done, "alias": alias_signed, "audit_trail": audit_signed}
            if head_signed:
                details["audit_head"] = True
            if rotated:
                details["rotated"] = rotated
            if any(rebound.values()):
                details["rebound"] = rebound
            _, legacy = self._chain(model)
            if legacy:
                prefix = len(f"models/{model}/audit/")
                details["legacy_sha256"] = {
                    k[prefix:]: sha256(self.store.get_bytes(k)) for k in legacy
                }
            self.record_event(model, "sign", actor=actor, reason=reason, details=details)
        self.alias_doc(model)  # what is signed now checks out (a wrong signature still raises)
        self._events(model)
        for version in self.version_numbers(model):
            self.get_version(model, version)
            self._version_doc(model, version, "status.json")  # production hides it
        return {
            "model": model,
            **done,
            "alias": alias_signed,
            "audit_trail": audit_signed,
            "audit_head": head_signed,
            "rotated": rotated,
            "rebound": rebound,
        }

    def _signing_plan(self, model: str) -> dict[str, tuple[str, str]]:
        """Every signed document of a model by key: (kind, who signed it, see `_signer`).

        Kinds: `versions` (metadata.sig), `statuses`, `evaluations`, `alias`, `head` (the
        trail's head, `audit_head.json`) and `audit` (the
        trail as a whole: who signed the newest event that vouches for it, "unsigned" when
        events follow it without a signature or events from before the chain are not vouched
        for, "unknown" when one that follows it has a signature of no accepted key).
        """
        plan: dict[str, tuple[str, str]] = {}
        for version in self.version_numbers(model):
            raw = self.store.get_bytes(self._vkey(model, version, "metadata.json"))
            sig_key = self._vkey(model, version, "metadata.sig")
            sig, _ = self.store.read_bytes_versioned(sig_key)
            given = sig.decode("ascii", "replace").strip() if sig is not None else None
            plan[sig_key] = (
                "versions",
                self._file_signer(model, version, "metadata.json", raw, given),
            )
            for leaf, kind in (("status.json", "statuses"), ("evaluation.json", "evaluations")):
                key = self._vkey(model, version, leaf)
                doc, _ = self.store.read_json_versioned(key)
                if isinstance(doc, dict):
                    plan[key] = (kind, self._version_doc_signer(model, version, leaf, doc))
        for kind, key in (
            ("alias", self._akey(model, PRODUCTION)),
            ("head", self._head_key(model)),
        ):
            doc, _ = self.store.read_json_versioned(key)
            if isinstance(doc, dict):
                plan[key] = (kind, self._doc_signer(doc))
        chain, legacy = self._chain(model)
        if chain or legacy:
            data = {seq: self.store.get_bytes(key) for seq, key in chain.items()}
            legacy_bytes = {key: self.store.get_bytes(key) for key in legacy}
            problems = self._signature_problems(model, chain, data, legacy_bytes) if chain else []
            tail = chain[max(chain)] if chain else legacy[-1]
            if not chain or problems:
                state = (
                    "unknown"
                    if any("signature does not match" in p for p in problems)
                    else ("unsigned")
                )
            else:
                vouching = [
                    self._doc_signer(e)
                    for seq in sorted(data)
                    if (e := _parse_event(data[seq])) is not None
                ]
                state = next(w for w in reversed(vouching) if w in ("current", "previous"))
            plan[tail] = ("audit", state)
        return plan

    def _sign_document(self, key: str, kind: str, state: str) -> bool:
        """Sign one document that `_signing_plan` found `state`; False when it changed since
        (a concurrent writer signed it: nothing to do, the final checks still run)."""
        if kind in ("alias", "head"):
            doc, token = self.store.read_json_versioned(key)
            if not isinstance(doc, dict) or self._doc_signer(doc) != state:
                return False
            return self._swap_signed(key, self._signed(_unsigned(doc)), token)
        _, model, _, number, leaf = key.split("/")
        version = int(number)
        # Bound to this folder only when the metadata here says it is this version: never
        # bless a folder copied over another (the registry verified; it may have changed).
        meta, raw = self._read_metadata(model, version)
        if problem := self._claims_problem(model, version, meta):
            raise IntegrityError(f"refusing to sign: {problem}", model=model, version=version)
        if kind == "versions":
            signature = self._file_signature(model, version, "metadata.json", raw).encode()
            if state == "unsigned":
                return self.store.put_if_absent(key, signature)
            given = self.store.get_bytes(key).decode("ascii", "replace").strip()
            # Never re-sign what no accepted key signed.
            if self._file_signer(model, version, "metadata.json", raw, given) != state:
                return False
            self.store.put_bytes(key, signature)
            return True
        doc, token = self.store.read_json_versioned(key)
        if (
            not isinstance(doc, dict)
            or self._version_doc_signer(model, version, leaf, doc) != state
        ):
            return False
        signed = self._signed_version_doc(model, version, leaf, _unsigned(doc))
        return self._swap_signed(key, signed, token)

    def _swap_signed(self, key: str, doc: dict[str, Any], token: Token | None) -> bool:
        try:
            self.store.compare_and_swap(key, doc, token)
        except ConcurrentUpdateError:
            return False
        return True

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

    @staticmethod
    def _seq_key(model: str, seq: int) -> str:
        return f"models/{model}/audit/{seq:010d}.json"

    def _chain(self, model: str) -> tuple[dict[int, str], list[str]]:
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

    def _chain_tail(self, model: str) -> int:
        return max(self._chain(model)[0], default=0)

    # The head: the newest event, anchored -------------------------------------------------
    @staticmethod
    def _head_key(model: str) -> str:
        return f"models/{model}/audit_head.json"

    def _read_head(self, model: str) -> tuple[dict[str, Any] | None, Token | None, str | None]:
        """The trail's head document, its token, and what is wrong with it (None when it is
        sound); (None, None, None) when there is none."""
        key = self._head_key(model)
        raw, token = self.store.read_bytes_versioned(key)
        if raw is None:
            return None, None, None
        uri = self.store.uri_for(key)
        try:
            doc = self.store.decode_json(key, raw)
        except IntegrityError as err:
            return None, token, f"{err}; " + _RESTORE.format(model=model)
        problem = _head_shape_problem(model, doc) or self._signature_problem(doc, model)
        if problem:
            return None, token, f"{uri}: not a valid audit head ({problem})"
        return doc, token, None

    def _move_head(
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
        key = self._head_key(model)
        for _ in range(_CAS_ATTEMPTS):
            doc, token, problem = self._read_head(model)
            if problem is None and doc is not None:
                if doc["seq"] >= seq:
                    return  # a later append anchored it (the chain is linear)
                problem = self._head_mismatch(model, doc, stored)
            if problem is not None:
                log.warning("%s; not moving it (`mlops verify %s` reports it)", problem, model)
                return
            head = {"model": model, "seq": seq, "sha256": digest, "at": now()}
            try:
                self.store.compare_and_swap(key, self._signed(head), token)
                return
            except ConcurrentUpdateError:
                continue  # another writer moved it: look again
            except StoreError as err:
                log.warning("%s: could not anchor audit event %d: %s", model, seq, err)
                return
        log.warning("%s: the audit head kept changing; event %d is not anchored yet", model, seq)

    def _head_mismatch(
        self, model: str, head: dict[str, Any], stored: Callable[[int, str], bytes]
    ) -> str | None:
        """What is wrong when the event the head anchors is no longer in the trail as it was."""
        seq = int(head["seq"])
        if seq == 0:
            return None
        uri = self.store.uri_for(self._head_key(model))
        try:
            data = stored(seq, self._seq_key(model, seq))
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

    def _append(
        self, model: str, event: dict[str, Any], after: int | None = None
    ) -> dict[str, Any]:
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

        head_missing = self._read_head(model) == (None, None, None)
        for _ in range(_AUDIT_ATTEMPTS):
            chain, _legacy = self._chain(model)
            tail = max(chain, default=0)
            if after is not None:
                for seq in range(after + 1, tail + 1):
                    found = _parse_event(stored(seq, chain[seq])) if seq in chain else None
                    if found and found.get("event_id") == event["event_id"]:
                        return found
            prev = sha256(stored(tail, chain[tail])) if tail in chain else None
            if head_missing:  # anchor what is there first: an anchored event implies a head
                self._move_head(model, tail, prev, stored)
                head_missing = False
            chained = self._signed(
                {**event, "seq": tail + 1, "prev_sha256": prev, "anchored": True}
            )
            key, data = self._seq_key(model, tail + 1), encode_json(chained)
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
                self._move_head(model, tail + 1, sha256(data), stored)
                return chained
        raise ConcurrentUpdateError(
            f"{model}: could not append to the audit trail after {_AUDIT_ATTEMPTS} attempts",
            model=model,
        )

    def _finish_move(self, model: str, doc: dict[str, Any] | None) -> None:
        """Append the event of the alias's last move if its writer died before doing so (a
        process that only checks signatures leaves that to the next one that can sign)."""
        event = doc.get("event") if doc else None
        if not event or doc is None or (self.keys is not None and not self.keys.can_sign):
            return
        if "event_after_seq" in doc:
            self._append(model, event, after=int(doc["event_after_seq"]))
        else:  # an alias written before the chain: its event went to a legacy key
            stamp = event["at"].replace(":", "").replace("-", "")
            key = f"models/{model}/audit/{stamp}_{event['event_id']}.json"
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
        return self._append(model, event)

    def _read_event(self, key: str, data: bytes | None = None) -> dict[str, Any]:
        event = _parse_event(self.store.get_bytes(key) if data is None else data)
        if event is None:
            uri = self.store.uri_for(key)
            raise IntegrityError(
                f"{uri}: not a valid audit event (corrupt JSON or no action); "
                "`mlops verify` lists every problem; restore it from a backup",
                uri=uri,
            )
        return event

    def _events(self, model: str) -> list[dict[str, Any]]:
        """Every event, oldest first; with a key, IntegrityError naming the first event that
        no signature vouches for (see `_signature_problems`)."""
        chain, legacy = self._chain(model)
        stored = {k: self.store.get_bytes(k) for k in [*legacy, *(chain[s] for s in sorted(chain))]}
        events = [self._read_event(k, data) for k, data in stored.items()]
        by_seq = {seq: stored[key] for seq, key in chain.items()}
        legacy_bytes = {k: stored[k] for k in legacy}
        if problems := self._signature_problems(model, chain, by_seq, legacy_bytes):
            more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
            raise IntegrityError(
                f"{problems[0]}{more}; `mlops verify {model}` lists every problem",
                model=model,
                problems=problems,
            )
        return events

    def _signature_problems(
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
        if self.keys is None or not chain:
            return []
        signers: dict[int, str] = {}
        vouched_legacy: dict[str, str] = {}
        for seq in sorted(data):
            event = _parse_event(data[seq])
            if event is None or event.get("model") != model:
                signers[seq] = "unknown"
                continue
            signers[seq] = self._doc_signer(event)
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

    def audit(self, model: str, action: str | None = None) -> list[dict[str, Any]]:
        """Every audit event of a model, oldest first (events from before the hash chain
        existed come first, in time order)."""
        try:
            doc = self.alias_doc(model)
        except IntegrityError as err:  # the trail is how a corrupt alias gets repaired
            log.warning("%s", err)
            doc = None
        self._finish_move(model, doc)
        events = self._events(model)
        return [e for e in events if action is None or e["action"] == action]

    def verify(self, model: str) -> dict[str, Any]:
        """Check a model's registry: the audit hash chain, that the production alias agrees
        with the promote/rollback/repair events, that every version's metadata names the
        model and version of the folder it is in, every version's artifact SHA-256 against
        its metadata and its registration event, and that each dataset snapshot a version's
        lineage names is in the store and its content still hashes to its name. The trail's
        head must anchor its newest event (so deleting the newest events shows), and no event
        id may be appended twice. `problems` is empty when all is well; `head` is the newest
        event's number and SHA-256, to keep outside the store as an anchor of its own.

        `signatures` says whether signatures were checked (a key is configured) and how many
        the model's documents carry: without a key, a signed store's signatures go unchecked,
        and a forgery of a signed document is then not noticed."""
        problems: list[str] = []
        doc: dict[str, Any] | None = None
        try:
            doc = self.alias_doc(model)
            self._finish_move(model, doc)
        except IntegrityError as err:
            problems.append(str(err))
        chain, legacy = self._chain(model)
        if doc is None and not problems and not chain and model not in self.models():
            raise NotFoundError(f"no model named {model!r} in {self.store.uri}", model=model)
        events: list[dict[str, Any]] = []
        legacy_bytes = {key: self.store.get_bytes(key) for key in legacy}
        for key, data in legacy_bytes.items():
            try:
                events.append(self._read_event(key, data))
            except IntegrityError as err:
                problems.append(str(err))
        chained, stored = self._verify_chain(chain, problems)
        events += chained
        problems += _duplicate_problems(model, events)
        problems += self._head_problems(model, chain, stored)
        problems += self._signature_problems(model, chain, stored, legacy_bytes)
        registered = {
            e.get("to_version"): (e.get("details") or {}).get("model_sha256")
            for e in events
            if e.get("action") == "register"
        }
        if doc is not None:
            problems += _alias_problems(model, doc, events)
        versions = self.version_numbers(model)
        snapshots: dict[str, list[int]] = {}
        for version in versions:
            for leaf in ("status.json", "evaluation.json"):
                try:
                    self._version_doc(model, version, leaf)
                except IntegrityError as err:
                    problems.append(str(err))
            try:
                meta, raw = self._read_metadata(model, version)
            except (IntegrityError, NotFoundError) as err:
                problems.append(str(err))
                continue
            # Every version's claims and signature are reported, and its files still checked
            # against the metadata found and the folder's register event: a copy shows there.
            problems += self._metadata_problems(model, version, meta, raw)
            for named in _snapshots_named(meta):
                snapshots.setdefault(named, []).append(version)
            digest = meta["model_sha256"]
            try:
                self.load_bytes(model, version, digest)
                for leaf in meta.get("files_sha256") or {}:
                    self._checked_file(model, version, leaf, meta)
            except (IntegrityError, NotFoundError) as err:
                problems.append(str(err))
                continue
            if version not in registered:
                problems.append(f"{model} v{version} has no register event in the audit trail")
            elif registered[version] != digest:
                problems.append(
                    f"{model} v{version}: metadata SHA-256 {digest[:16]}... differs from the "
                    f"{str(registered[version])[:16]}... its register event recorded"
                )
        problems += [
            p
            for digest, named_by in snapshots.items()
            if (p := self._snapshot_problem(model, digest, named_by)) is not None
        ]
        tail = max(stored, default=0)
        return {
            "model": model,
            "head": {"seq": tail, "sha256": sha256(stored[tail]) if tail else None},
            "events": len(events),
            "chained_events": len(chain),
            "legacy_events": len(legacy),
            "versions": len(versions),
            "production": _alias_version(doc),
            "problems": problems,
            "signatures": {
                "checked": self.keys is not None,
                "found": self._signatures_found(model, versions, [*stored.values()], legacy_bytes),
            },
        }

    def _head_problems(
        self, model: str, chain: dict[int, str], stored: dict[int, bytes]
    ) -> list[str]:
        """What is wrong with the trail's head: missing while events were anchored by it, not
        valid, or anchoring an event that was deleted or replaced."""
        doc, _, problem = self._read_head(model)
        if problem is not None:
            return [problem]
        uri = self.store.uri_for(self._head_key(model))
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

        mismatch = self._head_mismatch(model, doc, read)
        return [mismatch] if mismatch else []

    def _snapshot_problem(self, model: str, digest: str, named_by: list[int]) -> str | None:
        """What is wrong with the dataset snapshot `digest` that versions `named_by` were
        trained on: missing, unreadable, or its content no longer hashes to its name."""
        from mlops_tasks.datasets import content_hash, load_snapshot
        from mlops_tasks.errors import DataError

        versions = ", ".join(f"v{v}" for v in named_by)
        uri = self.store.uri_for(f"datasets/{digest}/data.parquet")
        try:
            frame = load_snapshot(digest, self.store)
        except DataError as err:
            return f"{uri}: the training data of {model} {versions} cannot be read: {err}"
        actual = content_hash(frame)
        if actual == digest:
            return None
        return (
            f"{uri}: the training data of {model} {versions} was changed: its content hashes to "
            f"{actual[:16]}..., not to the name it is stored under (`mlops reproduce` cannot "
            "rebuild from it); " + _RESTORE.format(model=model)
        )

    def _signatures_found(
        self,
        model: str,
        versions: list[int],
        events: list[bytes],
        legacy: dict[str, bytes],
    ) -> int:
        """How many of a model's documents carry a signature, valid or not: each version's
        `metadata.sig`, signed status and evaluation, the alias and every audit event."""
        found = 0
        for version in versions:
            found += self.store.exists(self._vkey(model, version, "metadata.sig"))
            for leaf in ("status.json", "evaluation.json"):
                raw, _ = self.store.read_bytes_versioned(self._vkey(model, version, leaf))
                found += raw is not None and _has_signature(raw)
        alias, _ = self.store.read_bytes_versioned(self._akey(model, PRODUCTION))
        found += alias is not None and _has_signature(alias)
        return found + sum(_has_signature(raw) for raw in [*events, *legacy.values()])

    def _verify_chain(
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


def _left(version: int, event: dict[str, Any]) -> dict[str, Any]:
    """The history entry of the version an alias move leaves."""
    entry: dict[str, Any] = {"version": version, "until": event["at"]}
    if event["action"] == "rollback":
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
            "audit trail's last promote/rollback/repair event"
        )
    return problems


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


def _snapshots_named(meta: dict[str, Any]) -> list[str]:
    """The dataset snapshots a version's lineage names: what it was trained on, and the
    labelled traffic added to it."""
    dataset = meta.get("dataset")
    if not isinstance(dataset, dict):
        return []
    return [d for d in (dataset.get("train"), dataset.get("traffic")) if isinstance(d, str)]


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


#: What a document's signer (`Registry._signer`) means when a key is configured.
_SIGNATURE_PROBLEMS = {
    "unsigned": "not signed, and a signing key is configured; written before the key? "
    "`mlops sign {model}`",
    "unknown": "its signature does not match (edited, or signed with a key that is not "
    "accepted); restore it from a backup, or `mlops verify {model}` lists every problem",
}


def _unsigned(doc: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in doc.items() if k != "signature"}


#: What a version file's signer (`Registry._file_signer`) means when a key is configured.
_FILE_SIGNATURE_PROBLEMS = {
    **_SIGNATURE_PROBLEMS,
    "unknown": "its signature does not match (edited, copied from another version's folder, "
    "or signed with a key that is not accepted); restore it from a backup, or "
    "`mlops verify {model}` lists every problem",
    "legacy": "signed under the old scheme, which does not bind the model name and version "
    "number (the same file in another version's folder verified too); re-sign it with "
    "`mlops sign {model} --reason ...`, which binds it to this folder when the version's "
    "metadata names this model and version",
}

#: A version file's signature bound to its folder starts with this; one without it is the old
#: scheme (an HMAC of the content alone), refused by every read (see `Registry._file_signer`).
_BOUND = "bound:"


def _binding(model: str, version: int, leaf: str, content: bytes) -> bytes:
    """What a version file's signature covers: the model name, the version number, the file's
    name and the SHA-256 of its content (the metadata's bytes; a status's or evaluation's
    canonical JSON without its signature), so the same file in another version's or another
    model's folder does not verify. The leading tag keeps this apart from the HMAC of a JSON
    document (an alias, an event): a bound signature is never a valid signature of one."""
    fields = {"model": model, "version": version, "file": leaf, "sha256": sha256(content)}
    return b"mlops version file\n" + encode_json(fields)


def _encoded_with_non_finite(doc: dict[str, Any]) -> bytes | None:
    """A document as `encode_json` encoded it before it stored non-finite numbers as null
    (`Infinity`, `NaN`), when that differs: what its signature was made over. None otherwise."""
    before = (json.dumps(doc, indent=2, sort_keys=True, default=str) + "\n").encode()
    return None if before == encode_json(doc) else before


def _has_signature(raw: bytes) -> bool:
    """Whether a stored JSON document carries a `signature` (not whether it is valid)."""
    try:
        doc = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError):
        return False
    return isinstance(doc, dict) and "signature" in doc


def _alias_version(doc: dict[str, Any] | None) -> int | None:
    return int(doc["version"]) if doc and doc.get("version") is not None else None


def _parse_version(
    meta: dict[str, Any], status: str, evaluation: dict[str, Any] | None
) -> ModelVersion:
    return from_json(ModelVersion, {**meta, "status": status, "evaluation": evaluation})
