"""A model's version folders: registering a version, reading its metadata, its files, its
status and evaluation documents, and loading its artifact.

A version is what its folder says it is: its metadata names its own model and number, and is
only read from the folder of that model and number (with a key, its signature is bound to that
folder too). `metadata.json` is written last and marks the version complete.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from typing import Any

from pydantic import ValidationError

from mlops_tasks.errors import IntegrityError, MlopsError, NotFoundError, RegistryError
from mlops_tasks.model.artifacts import load_artifact
from mlops_tasks.records import ModelVersion, ProductionAlias, VersionLineage, from_json, to_json
from mlops_tasks.registry._common import _RESTORE, PRODUCTION, now, sha256
from mlops_tasks.registry.audit import AuditTrail
from mlops_tasks.registry.signatures import _FILE_SIGNATURE_PROBLEMS, Signatures, _unsigned
from mlops_tasks.storage import ArtifactStore, encode_json

log = logging.getLogger("mlops_tasks.registry")


class Versions:
    """Registers and reads the version folders of a store's models."""

    def __init__(self, store: ArtifactStore, sig: Signatures, trail: AuditTrail) -> None:
        self.store = store
        self.sig = sig
        self.trail = trail

    # Keys ---------------------------------------------------------------------------------
    @staticmethod
    def key(model: str, version: int, leaf: str) -> str:
        return f"models/{model}/versions/{version}/{leaf}"

    def uri(self, model: str, version: int, leaf: str) -> str:
        return self.store.uri_for(self.key(model, version, leaf))

    def numbers(self, model: str) -> list[int]:
        """Complete versions (with metadata.json), ascending."""
        keys = self.store.list_keys(f"models/{model}/versions/")
        out = set()
        for k in keys:
            parts = k.split("/")
            if len(parts) == 5 and parts[4] == "metadata.json" and parts[3].isdigit():
                out.add(int(parts[3]))
        return sorted(out)

    # Metadata -----------------------------------------------------------------------------
    def metadata(self, model: str, version: int) -> dict[str, Any]:
        """A version's metadata, only when it names this model and version and (with a key)
        its signature was made for this folder: IntegrityError naming the file otherwise."""
        meta, raw = self.read_metadata(model, version)
        if problems := self.metadata_problems(model, version, meta, raw):
            raise IntegrityError(
                problems[0],
                model=model,
                version=version,
                uri=self.uri(model, version, "metadata.json"),
                claimed_model=meta.get("name"),
                claimed_version=meta.get("version"),
                problems=problems,
            )
        return meta

    def read_metadata(self, model: str, version: int) -> tuple[dict[str, Any], bytes]:
        """A version's metadata and its bytes, checked for shape only (see `metadata`)."""
        key = self.key(model, version, "metadata.json")
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

    def metadata_problems(
        self, model: str, version: int, meta: dict[str, Any], raw: bytes
    ) -> list[str]:
        """Why the metadata read from the folder of `model` v`version` is not that version's:
        it names another (with or without a key), and its signature (with a key)."""
        return [
            p
            for p in (
                self.claims_problem(model, version, meta),
                self._metadata_signature_problem(model, version, raw),
            )
            if p is not None
        ]

    def claims_problem(self, model: str, version: int, meta: dict[str, Any]) -> str | None:
        """What is wrong when the metadata read from the folder of `model` v`version` names
        another model or version (None when it names this one). Checked with or without a
        key: the folder decides where a version is served from, the metadata what it is."""
        name, number = meta.get("name"), meta.get("version")
        if name == model and type(number) is int and number == version:
            return None
        uri = self.uri(model, version, "metadata.json")
        if isinstance(name, str) and type(number) is int:
            claim = f"claims to be {name} v{number}"
        else:
            claim = f"does not name its model and version (name {name!r}, version {number!r})"
        return (
            f"{uri}: {claim} but was found as {model} v{version} (a version folder copied "
            "over another, or replayed?); refusing it; " + _RESTORE.format(model=model)
        )

    def _metadata_signature_problem(self, model: str, version: int, raw: bytes) -> str | None:
        """With a key: what is wrong with the signature of the metadata read from the folder
        of `model` v`version` (None when a current or previous key signed it for that folder)."""
        if self.sig.keys is None:
            return None
        key = self.key(model, version, "metadata.sig")
        uri = self.uri(model, version, "metadata.json")
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

    # Documents and files ------------------------------------------------------------------
    def doc(self, model: str, version: int, leaf: str) -> tuple[dict[str, Any] | None, str | None]:
        """A version's `status.json` or `evaluation.json` without its signature, and its
        token; with a key, IntegrityError naming the file when it is unsigned or forged."""
        key = self.key(model, version, leaf)
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
        if self.sig.keys is not None:
            who = self.sig.version_doc_signer(model, version, leaf, doc)
            if problem := _FILE_SIGNATURE_PROBLEMS.get(who, "").format(model=model):
                raise IntegrityError(
                    f"{uri}: refused, {problem}", model=model, version=version, uri=uri
                )
        return _unsigned(doc), token

    def evaluation(self, model: str, version: int) -> dict[str, Any] | None:
        return self.doc(model, version, "evaluation.json")[0]

    def checked_file(self, model: str, version: int, leaf: str, meta: dict[str, Any]) -> bytes:
        """A file stored with a version, checked against metadata already read (and checked
        by the caller)."""
        key = self.key(model, version, leaf)
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
    def get(
        self,
        model: str,
        version: int,
        alias: ProductionAlias | Callable[[str], ProductionAlias | None] | None,
    ) -> ModelVersion:
        """A version with its status and evaluation. `alias`: the production alias (None when
        there is none), or what reads it once the version's metadata checked out."""
        meta = self.metadata(model, version)
        held = alias(model) if callable(alias) else alias
        status = self.status(model, version, held)
        try:
            return _parse_version(meta, status, self.evaluation(model, version))
        except ValidationError as err:
            uri = self.uri(model, version, "metadata.json")
            raise IntegrityError(
                f"{uri}: metadata does not match the version schema: "
                f"{err.error_count()} error(s), first: {err.errors()[0]['msg']} at "
                f"{'.'.join(map(str, err.errors()[0]['loc']))}; " + _RESTORE.format(model=model),
                model=model,
                version=version,
                uri=uri,
            ) from None

    def status(self, model: str, version: int, alias: ProductionAlias | None) -> str:
        if alias and alias.version == version:
            return PRODUCTION
        if alias and alias.held(version):
            return "archived"
        stored, _ = self.doc(model, version, "status.json")
        return str(stored["status"]) if stored else "candidate"

    # Registering --------------------------------------------------------------------------
    def register(
        self,
        model: str,
        model_bytes: bytes,
        lineage: VersionLineage,
        actor: str,
        files: dict[str, bytes] | None = None,
    ) -> ModelVersion:
        """See `Registry.register`."""
        existing = self.store.list_keys(f"models/{model}/versions/")
        taken = {int(k.split("/")[3]) for k in existing if k.split("/")[3].isdigit()}
        version = max(taken, default=0) + 1
        claim = encode_json({"claimed_at": now(), "by": actor, "pid": os.getpid()})
        while not self.store.put_if_absent(self.key(model, version, "claim.json"), claim):
            version += 1
        digest = sha256(model_bytes)
        fields = to_json(lineage)
        if fields.get("search") is None:  # unsearched: the metadata older versions have
            fields.pop("search", None)
        meta = {
            **fields,
            "name": model,
            "version": version,
            "model_sha256": digest,
            "model_bytes": len(model_bytes),
            # Covered by the metadata's signature: the holdout predictions the gate reads.
            "files_sha256": {leaf: sha256(data) for leaf, data in (files or {}).items()},
            "created_at": now(),
            "created_by": actor,
        }
        written = [self.key(model, version, "claim.json")]
        try:
            for leaf, data in [("model.skops", model_bytes), *(files or {}).items()]:
                written.append(self.key(model, version, leaf))
                self.store.put_bytes(written[-1], data)
            if self.sig.keys is not None:  # before metadata.json, which completes the version
                written.append(self.key(model, version, "metadata.sig"))
                signature = self.sig.file_signature(
                    model, version, "metadata.json", encode_json(meta)
                )
                self.store.put_bytes(written[-1], signature.encode())
            written.append(self.key(model, version, "metadata.json"))
            self.store.put_bytes(written[-1], encode_json(meta))
        except Exception:
            self._release(model, version, written)
            raise
        details: dict[str, Any] = {"model_sha256": digest, "run_id": lineage.run_id}
        if lineage.external is not None:  # trained elsewhere: the file and who brought it
            details["external"] = to_json(lineage.external)
        reason = lineage.triggered_by.reason
        event = self.trail.event(model, "register", actor, reason, None, version, details)
        self.trail.append(model, event)
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
        self.metadata(model, version)  # must exist
        key = self.key(model, version, "evaluation.json")
        self.store.put_json(
            key, self.sig.signed_version_doc(model, version, "evaluation.json", evaluation)
        )

    def reject(
        self, model: str, version: int, reason: str, actor: str, alias: ProductionAlias | None
    ) -> None:
        """Mark a candidate rejected (`alias`: the production alias, None when there is none);
        it can never be promoted afterwards."""
        status = self.status(model, version, alias)
        if status == "rejected":
            return
        if status != "candidate":
            raise RegistryError(
                f"{model} v{version} is {status}; only candidates can be rejected",
                model=model,
                version=version,
            )
        key = self.key(model, version, "status.json")
        _, token = self.doc(model, version, "status.json")
        rejected = {"status": "rejected", "reason": reason, "at": now()}
        signed = self.sig.signed_version_doc(model, version, "status.json", rejected)
        self.store.compare_and_swap(key, signed, token)
        event = self.trail.event(model, "reject", actor, reason, None, version, None)
        self.trail.append(model, event)

    # Loading ------------------------------------------------------------------------------
    def load_bytes(self, model: str, version: int, expected_sha256: str) -> bytes:
        """The model artifact, after checking its SHA-256 against the registered one."""
        key = self.key(model, version, "model.skops")
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
        type in it against the allow-list of its own estimator family (a custom estimator:
        the types its version records, each from a package the store's deployment trusts)."""
        if meta is None:
            meta = self.metadata(model, version)
        fields = meta.to_json() if isinstance(meta, ModelVersion) else meta
        data = self.load_bytes(model, version, str(fields["model_sha256"]))
        custom = fields.get("custom")
        trust = None
        if isinstance(custom, dict):  # a custom estimator: the exact types its version records
            trust = (tuple(custom.get("types") or ()), self.store.trusted_packages)
        return load_artifact(data, f"{model} v{version}", fields.get("estimator"), trust)


def _parse_version(
    meta: dict[str, Any], status: str, evaluation: dict[str, Any] | None
) -> ModelVersion:
    return from_json(ModelVersion, {**meta, "status": status, "evaluation": evaluation})
