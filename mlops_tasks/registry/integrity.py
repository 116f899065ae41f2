"""Checks and blessings over all of a model's registry: `verify` (the audit chain, the alias
against the trail, every version's folder, artifact and training data) and `sign` (signing
what was written before the key, and re-signing what a previous key signed)."""

from __future__ import annotations

from typing import Any

from mlops_tasks.errors import ConcurrentUpdateError, IntegrityError, NotFoundError, UsageError
from mlops_tasks.records import (
    AuditHead,
    RegistryVerification,
    SignatureCount,
    SignedDocuments,
    SigningResult,
)
from mlops_tasks.registry._common import _RESTORE, PRODUCTION, sha256
from mlops_tasks.registry.aliases import Aliases, _alias_problems, _alias_version
from mlops_tasks.registry.audit import AuditTrail, _duplicate_problems, _parse_event
from mlops_tasks.registry.signatures import Signatures, _has_signature, _unsigned
from mlops_tasks.registry.versions import Versions
from mlops_tasks.storage import ArtifactStore, Token


class Integrity:
    """Verifies and signs the registries of a store's models."""

    def __init__(
        self,
        store: ArtifactStore,
        sig: Signatures,
        trail: AuditTrail,
        versions: Versions,
        aliases: Aliases,
    ) -> None:
        self.store = store
        self.sig = sig
        self.trail = trail
        self.versions = versions
        self.aliases = aliases

    # Verifying ----------------------------------------------------------------------------
    def verify(self, model: str) -> RegistryVerification:
        """See `Registry.verify`."""
        problems: list[str] = []
        doc: dict[str, Any] | None = None
        try:
            doc = self.aliases.doc(model)
            self.aliases.finish_move(model, doc)
        except IntegrityError as err:
            problems.append(str(err))
        chain, legacy = self.trail.chain(model)
        if (
            doc is None
            and not problems
            and not chain
            and model not in self.store.list_dirs("models")
        ):
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
        if doc is not None:
            problems += _alias_problems(model, doc, events)
        versions = self.versions.numbers(model)
        problems += self._version_problems(model, versions, events)
        tail = max(stored, default=0)
        return RegistryVerification(
            model=model,
            head=AuditHead(tail, sha256(stored[tail]) if tail else None),
            events=len(events),
            chained_events=len(chain),
            legacy_events=len(legacy),
            versions=len(versions),
            production=_alias_version(doc),
            problems=tuple(problems),
            signatures=SignatureCount(
                checked=self.sig.keys is not None,
                found=self._signatures_found(model, versions, [*stored.values()], legacy_bytes),
            ),
        )

    def _version_problems(
        self, model: str, versions: list[int], events: list[dict[str, Any]]
    ) -> list[str]:
        """What is wrong with each version's documents, metadata, files and register event,
        then with the dataset snapshots their lineage names."""
        problems: list[str] = []
        registered = {
            e.get("to_version"): (e.get("details") or {}).get("model_sha256")
            for e in events
            if e.get("action") == "register"
        }
        snapshots: dict[str, list[int]] = {}
        for version in versions:
            for leaf in ("status.json", "evaluation.json"):
                try:
                    self.versions.doc(model, version, leaf)
                except IntegrityError as err:
                    problems.append(str(err))
            try:
                meta, raw = self.versions.read_metadata(model, version)
            except (IntegrityError, NotFoundError) as err:
                problems.append(str(err))
                continue
            # Every version's claims and signature are reported, and its files still checked
            # against the metadata found and the folder's register event: a copy shows there.
            problems += self.versions.metadata_problems(model, version, meta, raw)
            for named in _snapshots_named(meta):
                snapshots.setdefault(named, []).append(version)
            digest = meta["model_sha256"]
            try:
                self.versions.load_bytes(model, version, digest)
                for leaf in meta.get("files_sha256") or {}:
                    self.versions.checked_file(model, version, leaf, meta)
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
        return problems + [
            p
            for digest, named_by in snapshots.items()
            if (p := self._snapshot_problem(model, digest, named_by)) is not None
        ]

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
            found += self.store.exists(self.versions.key(model, version, "metadata.sig"))
            for leaf in ("status.json", "evaluation.json"):
                raw, _ = self.store.read_bytes_versioned(self.versions.key(model, version, leaf))
                found += raw is not None and _has_signature(raw)
        alias, _ = self.store.read_bytes_versioned(self.aliases.key(model, PRODUCTION))
        found += alias is not None and _has_signature(alias)
        return found + sum(_has_signature(raw) for raw in [*events, *legacy.values()])

    # Signing ------------------------------------------------------------------------------
    def sign(
        self, model: str, reason: str, actor: str, rotate: bool, unchecked: Integrity
    ) -> SigningResult:
        """See `Registry.sign`; `unchecked`: this registry's parts without a key, which
        verify what is stored before anything is signed."""
        keys = self.sig.keys
        if keys is None:
            raise UsageError("no signing key is configured (MLOPS_SIGNING_KEY); nothing to sign")
        if not keys.can_sign:
            raise UsageError(
                "only public keys are configured (MLOPS_VERIFY_KEYS): signing needs the "
                "private key in MLOPS_SIGNING_KEY"
            )
        problems = list(unchecked.verify(model).problems)
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
            event = self.trail.event(model, "sign", actor, reason, None, None, details)
            self.trail.append(model, event)
        self.aliases.doc(model)  # what is signed now checks out (a wrong signature still raises)
        self.trail.events(model)
        for version in self.versions.numbers(model):
            self.versions.get(model, version, self.aliases.production(model))
            self.versions.doc(model, version, "status.json")  # production hides it
        return SigningResult(
            model=model,
            versions=tuple(done["versions"]),
            evaluations=tuple(done["evaluations"]),
            statuses=tuple(done["statuses"]),
            alias=alias_signed,
            audit_trail=audit_signed,
            audit_head=head_signed,
            rotated=tuple(rotated),
            rebound=SignedDocuments(
                tuple(rebound["versions"]),
                tuple(rebound["evaluations"]),
                tuple(rebound["statuses"]),
            ),
        )

    def _signing_plan(self, model: str) -> dict[str, tuple[str, str]]:
        """Every signed document of a model by key: (kind, who signed it, see `_signer`).

        Kinds: `versions` (metadata.sig), `statuses`, `evaluations`, `alias`, `head` (the
        trail's head, `audit_head.json`) and `audit` (the
        trail as a whole: who signed the newest event that vouches for it, "unsigned" when
        events follow it without a signature or events from before the chain are not vouched
        for, "unknown" when one that follows it has a signature of no accepted key).
        """
        plan: dict[str, tuple[str, str]] = {}
        for version in self.versions.numbers(model):
            raw = self.store.get_bytes(self.versions.key(model, version, "metadata.json"))
            sig_key = self.versions.key(model, version, "metadata.sig")
            sig, _ = self.store.read_bytes_versioned(sig_key)
            given = sig.decode("ascii", "replace").strip() if sig is not None else None
            plan[sig_key] = (
                "versions",
                self.sig.file_signer(model, version, "metadata.json", raw, given),
            )
            for leaf, kind in (("status.json", "statuses"), ("evaluation.json", "evaluations")):
                key = self.versions.key(model, version, leaf)
                doc, _ = self.store.read_json_versioned(key)
                if isinstance(doc, dict):
                    plan[key] = (kind, self.sig.version_doc_signer(model, version, leaf, doc))
        for kind, key in (
            ("alias", self.aliases.key(model, PRODUCTION)),
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
        meta, raw = self.versions.read_metadata(model, version)
        if problem := self.versions.claims_problem(model, version, meta):
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


def _snapshots_named(meta: dict[str, Any]) -> list[str]:
    """The dataset snapshots a version's lineage names: what it was trained on, and the
    labelled traffic added to it."""
    dataset = meta.get("dataset")
    if not isinstance(dataset, dict):
        return []
    return [d for d in (dataset.get("train"), dataset.get("traffic")) if isinstance(d, str)]
