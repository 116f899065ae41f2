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

With a signing key (`MLOPS_SIGNING_KEY`, carried by the store `Settings.open_store` opens; an
HMAC secret or an Ed25519 private key, `signing.py`), registering writes to `metadata.sig` a
signature that binds the model name, the version number, the file name and the SHA-256 of the
metadata's bytes (the metadata holds the SHA-256 of the artifact and of every file stored with
it); a version's `status.json` and `evaluation.json` carry such a bound signature of their
canonical JSON in `signature` (`signatures._binding`), and the alias, the audit head and every
audit event a signature of their canonical JSON. A signed event covers its seq and predecessor
hash, so it vouches for the chain before it. Every read checks them and refuses an unsigned or
wrongly signed document with IntegrityError, so whoever can write the store but does not hold
the key can no longer replace an artifact with its checksum, serve one version's folder as
another's, point production elsewhere, forge a gate result or rewrite the trail. Keys in
`MLOPS_SIGNING_PREVIOUS_KEYS` are accepted too, and `sign(rotate=True)` re-signs what they
signed with the current key; a process given only Ed25519 public keys (`MLOPS_VERIFY_KEYS`)
checks everything and changes nothing. A version file signed under the old scheme (its content
alone) is refused until `sign` binds it. Without a key, nothing is signed or checked (the
metadata's own name and version still are).

The parts: `signatures.Signatures` signs and checks documents, `audit.AuditTrail` appends to
and reads the hash chains and their heads, and `Registry` (here) is the facade over versions,
aliases, promotion, verification and signing that every caller uses.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from mlops_tasks.errors import (
    ConcurrentUpdateError,
    IntegrityError,
    MlopsError,
    NotFoundError,
    RegistryError,
    UsageError,
)
from mlops_tasks.model.artifacts import TRUSTED_TYPES, dump_artifact, load_artifact
from mlops_tasks.records import (
    AliasEntry,
    ModelVersion,
    ProductionAlias,
    ProductionChange,
    VersionLineage,
    from_json,
    to_json,
)
from mlops_tasks.registry._common import (
    _ALIAS_MOVES,
    _CAS_ATTEMPTS,
    _RESTORE,
    MIN_REASON,
    PRODUCTION,
    check_reason,
    now,
    sha256,
)
from mlops_tasks.registry.audit import (
    AuditTrail,
    _duplicate_problems,
    _parse_event,
)
from mlops_tasks.registry.signatures import (
    _FILE_SIGNATURE_PROBLEMS,
    Signatures,
    _has_signature,
    _unsigned,
)
from mlops_tasks.storage import ArtifactStore, Token, encode_json

if TYPE_CHECKING:
    from mlops_tasks.signing import Keyring

__all__ = [
    "MIN_REASON",
    "PRODUCTION",
    "TRUSTED_TYPES",
    "Registry",
    "check_reason",
    "dump_artifact",
    "encode_json",
    "load_artifact",
    "now",
    "sha256",
]

log = logging.getLogger(__name__)


class _ReadAlias:
    """`get_version`'s default: read the production alias (None means there is none)."""


_READ = _ReadAlias()


class Registry:
    """The registry of every model in one artifact store."""

    def __init__(self, store: ArtifactStore) -> None:
        self.store = store
        #: Signs and checks documents with the store's keys (`signing.Keyring`; None: nothing
        #: signed or checked; public keys only: checked, and every change refused).
        self.sig = Signatures(store.keyring)
        #: The models' audit trails (hash chains and their heads).
        self.trail = AuditTrail(store, self.sig)

    @property
    def keys(self) -> Keyring | None:
        return self.sig.keys

    @keys.setter
    def keys(self, keys: Keyring | None) -> None:
        self.sig.keys = keys

    def _metadata_signature_problem(self, model: str, version: int, raw: bytes) -> str | None:
        """With a key: what is wrong with the signature of the metadata read from the folder
        of `model` v`version` (None when a current or previous key signed it for that folder)."""
        if self.keys is None:
            return None
        key = self._vkey(model, version, "metadata.sig")
        uri = self.version_uri(model, version, "metadata.json")
        sig, _ = self.store.read_bytes_versioned(key)
        given = sig.decode("ascii", "replace").strip() if sig is not None else None
        who = self.sig.file_signer(model, version, "metadata.json", raw, given)
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
            who = self.sig.version_doc_signer(model, version, leaf, doc)
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

    def production_alias(self, model: str) -> ProductionAlias | None:
        """The production alias as a record (None before the first promotion); IntegrityError
        (with the repair command) when it is corrupt."""
        return _alias_record(self.alias_doc(model))

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
            problem := _alias_shape_problem(doc) or self.sig.signature_problem(doc, model)
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
        self,
        model: str,
        version: int,
        alias: ProductionAlias | _ReadAlias | None = _READ,
    ) -> ModelVersion:
        """A version with its status and evaluation; `alias` (the production alias a caller
        read already, None when there is none) saves re-reading it."""
        meta = self._metadata(model, version)
        held = self.production_alias(model) if isinstance(alias, _ReadAlias) else alias
        status = self._status(model, version, held)
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

    def _status(self, model: str, version: int, alias: ProductionAlias | None) -> str:
        if alias and alias.version == version:
            return PRODUCTION
        if alias and alias.held(version):
            return "archived"
        stored, _ = self._version_doc(model, version, "status.json")
        return str(stored["status"]) if stored else "candidate"

    def production(self, model: str) -> ModelVersion | None:
        """The production version (one read of the alias), or None before the first."""
        alias = self.production_alias(model)
        if alias is None or alias.version is None:
            return None
        return self.get_version(model, alias.version, alias)

    def versions(self, model: str) -> list[ModelVersion]:
        alias = self.production_alias(model)  # once, not per version (a request each on S3)
        return [self.get_version(model, v, alias) for v in self.version_numbers(model)]

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
                signature = self.sig.file_signature(
                    model, version, "metadata.json", encode_json(meta)
                )
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
            key, self.sig.signed_version_doc(model, version, "evaluation.json", evaluation)
        )

    def reject(self, model: str, version: int, reason: str, actor: str) -> None:
        """Mark a candidate rejected; it can never be promoted afterwards."""
        status = self._status(model, version, self.production_alias(model))
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
        signed = self.sig.signed_version_doc(model, version, "status.json", rejected)
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
    ) -> ProductionChange:
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
    ) -> ProductionChange:
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
    ) -> ProductionChange:
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
                return ProductionChange(model, version, previous, changed=False)
            event = self.trail.event(model, action, actor, reason, previous, version, details)
            history = [*(doc.get("history", []) if doc else [])]
            if previous is not None:
                history.append(_left(previous, event))
            after = self.trail.chain_tail(model)
            new_doc = {
                "version": version,
                "since": event["at"],
                "event": event,
                "event_after_seq": after,
                "history": history,
            }
            try:
                self.store.compare_and_swap(key, self.sig.signed(new_doc), token)
            except ConcurrentUpdateError:
                continue
            self.trail.append(model, event, after=after)
            log.info("%s %s: production v%s -> v%d", action, model, previous, version)
            return ProductionChange(model, version, previous, True, event["event_id"])
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
    ) -> ProductionChange:
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
        events = self.trail.events(model)
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
        event = self.trail.event(model, "repair_alias", actor, reason, previous, version, details)
        current, history = _replay([*events, event])
        after = self.trail.chain_tail(model)
        new_doc = {
            "version": current,
            "since": event["at"],
            "event": event,
            "event_after_seq": after,
            "history": history,
        }
        self.store.compare_and_swap(key, self.sig.signed(new_doc), token)
        self.trail.append(model, event, after=after)
        log.warning("repaired %s production alias: v%s (%s)", model, version, details["source"])
        return ProductionChange(model, version, previous, True, event["event_id"])

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
            _, legacy = self.trail.chain(model)
            if legacy:
                prefix = len(f"models/{model}/audit/")
                details["legacy_sha256"] = {
                    k[prefix:]: sha256(self.store.get_bytes(k)) for k in legacy
                }
            self.record_event(model, "sign", actor=actor, reason=reason, details=details)
        self.alias_doc(model)  # what is signed now checks out (a wrong signature still raises)
        self.trail.events(model)
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
                self.sig.file_signer(model, version, "metadata.json", raw, given),
            )
            for leaf, kind in (("status.json", "statuses"), ("evaluation.json", "evaluations")):
                key = self._vkey(model, version, leaf)
                doc, _ = self.store.read_json_versioned(key)
                if isinstance(doc, dict):
                    plan[key] = (kind, self.sig.version_doc_signer(model, version, leaf, doc))
        for kind, key in (
            ("alias", self._akey(model, PRODUCTION)),
            ("head", self.trail.head_key(model)),
        ):
            doc, _ = self.store.read_json_versioned(key)
            if isinstance(doc, dict):
                plan[key] = (kind, self.sig.doc_signer(doc))
        chain, legacy = self.trail.chain(model)
        if chain or legacy:
            data = {seq: self.store.get_bytes(key) for seq, key in chain.items()}
            legacy_bytes = {key: self.store.get_bytes(key) for key in legacy}
            problems = (
                self.trail.signature_problems(model, chain, data, legacy_bytes) if chain else []
            )
            tail = chain[max(chain)] if chain else legacy[-1]
            if not chain or problems:
                state = (
                    "unknown"
                    if any("signature does not match" in p for p in problems)
                    else ("unsigned")
                )
            else:
                vouching = [
                    self.sig.doc_signer(e)
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
            if not isinstance(doc, dict) or self.sig.doc_signer(doc) != state:
                return False
            return self._swap_signed(key, self.sig.signed(_unsigned(doc)), token)
        _, model, _, number, leaf = key.split("/")
        version = int(number)
        # Bound to this folder only when the metadata here says it is this version: never
        # bless a folder copied over another (the registry verified; it may have changed).
        meta, raw = self._read_metadata(model, version)
        if problem := self._claims_problem(model, version, meta):
            raise IntegrityError(f"refusing to sign: {problem}", model=model, version=version)
        if kind == "versions":
            signature = self.sig.file_signature(model, version, "metadata.json", raw).encode()
            if state == "unsigned":
                return self.store.put_if_absent(key, signature)
            given = self.store.get_bytes(key).decode("ascii", "replace").strip()
            # Never re-sign what no accepted key signed.
            if self.sig.file_signer(model, version, "metadata.json", raw, given) != state:
                return False
            self.store.put_bytes(key, signature)
            return True
        doc, token = self.store.read_json_versioned(key)
        if (
            not isinstance(doc, dict)
            or self.sig.version_doc_signer(model, version, leaf, doc) != state
        ):
            return False
        signed = self.sig.signed_version_doc(model, version, leaf, _unsigned(doc))
        return self._swap_signed(key, signed, token)

    def _swap_signed(self, key: str, doc: dict[str, Any], token: Token | None) -> bool:
        try:
            self.store.compare_and_swap(key, doc, token)
        except ConcurrentUpdateError:
            return False
        return True

    def _finish_move(self, model: str, doc: dict[str, Any] | None) -> None:
        """Append the event of the alias's last move if its writer died before doing so (a
        process that only checks signatures leaves that to the next one that can sign)."""
        event = doc.get("event") if doc else None
        if not event or doc is None or (self.keys is not None and not self.keys.can_sign):
            return
        if "event_after_seq" in doc:
            self.trail.append(model, event, after=int(doc["event_after_seq"]))
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
        event = self.trail.event(model, action, actor, reason, from_version, to_version, details)
        return self.trail.append(model, event)

    def audit(self, model: str, action: str | None = None) -> list[dict[str, Any]]:
        """Every audit event of a model, oldest first (events from before the hash chain
        existed come first, in time order)."""
        try:
            doc = self.alias_doc(model)
        except IntegrityError as err:  # the trail is how a corrupt alias gets repaired
            log.warning("%s", err)
            doc = None
        self._finish_move(model, doc)
        events = self.trail.events(model)
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
        chain, legacy = self.trail.chain(model)
        if doc is None and not problems and not chain and model not in self.models():
            raise NotFoundError(f"no model named {model!r} in {self.store.uri}", model=model)
        events: list[dict[str, Any]] = []
        legacy_bytes = {key: self.store.get_bytes(key) for key in legacy}
        for key, data in legacy_bytes.items():
            try:
                events.append(self.trail.read_event(key, data))
            except IntegrityError as err:
                problems.append(str(err))
        chained, stored = self.trail.verify_chain(chain, problems)
        events += chained
        problems += _duplicate_problems(model, events)
        problems += self.trail.head_problems(model, chain, stored)
        problems += self.trail.signature_problems(model, chain, stored, legacy_bytes)
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

    def _snapshot_problem(self, model: str, digest: str, named_by: list[int]) -> str | None:
        """What is wrong with the dataset snapshot `digest` that versions `named_by` were
        trained on: missing, unreadable, or its content no longer hashes to its name."""
        from mlops_tasks.data.datasets import content_hash, load_snapshot
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


def _snapshots_named(meta: dict[str, Any]) -> list[str]:
    """The dataset snapshots a version's lineage names: what it was trained on, and the
    labelled traffic added to it."""
    dataset = meta.get("dataset")
    if not isinstance(dataset, dict):
        return []
    return [d for d in (dataset.get("train"), dataset.get("traffic")) if isinstance(d, str)]


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


def _parse_version(
    meta: dict[str, Any], status: str, evaluation: dict[str, Any] | None
) -> ModelVersion:
    return from_json(ModelVersion, {**meta, "status": status, "evaluation": evaluation})


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
