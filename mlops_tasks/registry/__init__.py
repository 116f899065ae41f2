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
and reads the hash chains and their heads, `versions.Versions` registers and reads version
folders, `aliases.Aliases` reads and moves the production alias (promotion, rollback, repair),
`integrity.Integrity` verifies and signs a model's registry as a whole, and `Registry` (here) is
the facade over them that every caller uses.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from mlops_tasks.errors import IntegrityError, NotFoundError
from mlops_tasks.model.artifacts import TRUSTED_TYPES, dump_artifact, load_artifact
from mlops_tasks.records import (
    ModelVersion,
    ProductionAlias,
    ProductionChange,
    RegistryVerification,
    SigningResult,
    VersionLineage,
)
from mlops_tasks.registry._common import MIN_REASON, PRODUCTION, check_reason, now, sha256
from mlops_tasks.registry.aliases import Aliases, _alias_version
from mlops_tasks.registry.audit import AuditTrail
from mlops_tasks.registry.integrity import Integrity
from mlops_tasks.registry.signatures import Signatures
from mlops_tasks.registry.versions import Versions
from mlops_tasks.storage import ArtifactStore, encode_json

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
        #: signed or checked; public keys only: checked, and every change refused). Every
        #: part shares it, so setting `keys` changes what all of them sign and check.
        self.sig = Signatures(store.keyring)
        #: The models' audit trails (hash chains and their heads).
        self.trail = AuditTrail(store, self.sig)
        #: The models' version folders.
        self.folders = Versions(store, self.sig, self.trail)
        #: The models' production aliases.
        self.aliases = Aliases(store, self.sig, self.trail, self.folders)
        #: Verifying and signing a model's registry as a whole.
        self.integrity = Integrity(store, self.sig, self.trail, self.folders, self.aliases)

    @property
    def keys(self) -> Keyring | None:
        return self.sig.keys

    @keys.setter
    def keys(self, keys: Keyring | None) -> None:
        self.sig.keys = keys

    # Versions -----------------------------------------------------------------------------
    def version_uri(self, model: str, version: int, leaf: str) -> str:
        return self.folders.uri(model, version, leaf)

    def read_file(self, model: str, version: int, leaf: str) -> bytes:
        """A file stored with a version at registration (e.g. the holdout predictions its gate
        is computed from), after checking it against the SHA-256 in the version's metadata
        (signed with a key). A version registered before metadata recorded them is read as is.
        """
        meta = self.folders.metadata(model, version)
        return self.folders.checked_file(model, version, leaf, meta)

    def models(self) -> list[str]:
        return self.store.list_dirs("models")

    def version_numbers(self, model: str) -> list[int]:
        """Complete versions (with metadata.json), ascending."""
        return self.folders.numbers(model)

    def get_version(
        self,
        model: str,
        version: int,
        alias: ProductionAlias | _ReadAlias | None = _READ,
    ) -> ModelVersion:
        """A version with its status and evaluation; `alias` (the production alias a caller
        read already, None when there is none) saves re-reading it."""
        if isinstance(alias, _ReadAlias):  # read once the version's metadata checked out
            return self.folders.get(model, version, self.aliases.production)
        return self.folders.get(model, version, alias)

    def production(self, model: str) -> ModelVersion | None:
        """The production version (one read of the alias), or None before the first."""
        alias = self.production_alias(model)
        if alias is None or alias.version is None:
            return None
        return self.get_version(model, alias.version, alias)

    def versions(self, model: str) -> list[ModelVersion]:
        alias = self.production_alias(model)  # once, not per version (a request each on S3)
        return [self.get_version(model, v, alias) for v in self.version_numbers(model)]

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
        return self.folders.register(model, model_bytes, lineage, actor, files)

    def record_evaluation(self, model: str, version: int, evaluation: dict[str, Any]) -> None:
        """Attach the gate decision and metrics to a version (idempotent for the same result)."""
        self.folders.record_evaluation(model, version, evaluation)

    def reject(self, model: str, version: int, reason: str, actor: str) -> None:
        """Mark a candidate rejected; it can never be promoted afterwards."""
        self.folders.reject(model, version, reason, actor, self.production_alias(model))

    def load_bytes(self, model: str, version: int, expected_sha256: str) -> bytes:
        """The model artifact, after checking its SHA-256 against the registered one."""
        return self.folders.load_bytes(model, version, expected_sha256)

    def load(
        self, model: str, version: int, meta: dict[str, Any] | ModelVersion | None = None
    ) -> Any:
        """Load a verified model with skops (never pickle): its checksum first, then every
        type in it against the allow-list of its own estimator family."""
        return self.folders.load(model, version, meta)

    def load_scorer(self, model: str, version: int) -> tuple[Any, float | None]:
        """A verified model (as `load`) and its decision threshold (None: the most probable
        class), from one read of its metadata."""
        meta = self.folders.metadata(model, version)
        threshold = meta.get("threshold")
        value = threshold.get("value") if isinstance(threshold, dict) else None
        cut = (
            float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None
        )
        return self.folders.load(model, version, meta), cut

    def load_production(self, model: str) -> tuple[int, Any]:
        version = self.alias(model)
        if version is None:
            raise NotFoundError(f"model {model!r} has no production version", model=model)
        return version, self.load(model, version)

    # Aliases ------------------------------------------------------------------------------
    def alias(self, model: str, alias: str = PRODUCTION) -> int | None:
        return _alias_version(self.alias_doc(model, alias))

    def production_alias(self, model: str) -> ProductionAlias | None:
        """The production alias as a record (None before the first promotion); IntegrityError
        (with the repair command) when it is corrupt."""
        return self.aliases.production(model)

    def alias_doc(self, model: str, alias: str = PRODUCTION) -> dict[str, Any] | None:
        """The alias document; IntegrityError (with the repair command) when it is corrupt."""
        return self.aliases.doc(model, alias)

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
        return self.aliases.promote(model, version, reason, actor, details, force, expected)

    def rollback_target(self, model: str) -> int | None:
        """The version `rollback` without `to` would put in production now (None: none)."""
        return self.aliases.rollback_target(model)

    def rollback(
        self,
        model: str,
        reason: str,
        actor: str,
        to: int | None = None,
        expected: int | None = None,
        details: dict[str, Any] | None = None,
    ) -> ProductionChange:
        """Move production back to `to`, by default the previous production version.

        Without `to`, repeated rollbacks step back through the production history (v4 -> v3,
        then v3 -> v2, ...): the version left by a rollback is marked in the history and never
        chosen again by a later rollback without `to`. `expected`: the production version the
        caller saw (a page, a script); if production has moved since, nothing changes, so a
        form sent twice rolls back once. `details` go into the audit event (a run's `as_of`).
        """
        return self.aliases.rollback(model, reason, actor, to, expected, details)

    def withdraw(
        self,
        model: str,
        version: int,
        reason: str,
        actor: str,
        details: dict[str, Any] | None = None,
    ) -> ProductionChange:
        """Take `version` out of production, leaving no production version: for a first
        version that failed its deployment verification, with nothing before it to roll back
        to. Audited as `withdraw`; nothing changes when production is no longer `version`."""
        return self.aliases.withdraw(model, version, reason, actor, details)

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
        return self.aliases.repair(model, reason, actor, to, force)

    # Audit --------------------------------------------------------------------------------
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
        self.aliases.finish_move(model, doc)
        events = self.trail.events(model)
        return [e for e in events if action is None or e["action"] == action]

    # Integrity ----------------------------------------------------------------------------
    def verify(self, model: str) -> RegistryVerification:
        """Check a model's registry: the audit hash chain, that the production alias agrees
        with the promote/rollback/repair events, that every version's metadata names the
        model and version of the folder it is in, every version's artifact SHA-256 against
        its metadata and its registration event, and that each dataset snapshot a version's
        lineage names is in the store and its content still hashes to its name. The trail's
        head must anchor its newest event (so deleting the newest events shows), and no event
        id may be appended twice. `problems` is empty (`ok`) when all is well; `head` is the
        newest event's number and SHA-256, to keep outside the store as an anchor of its own.

        `signatures` says whether signatures were checked (a key is configured) and how many
        the model's documents carry: without a key, a signed store's signatures go unchecked,
        and a forgery of a signed document is then not noticed."""
        return self.integrity.verify(model)

    def sign(self, model: str, reason: str, actor: str, rotate: bool = False) -> SigningResult:
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
        version, and signing checks it again for the folder it signs.
        """
        unchecked = Registry(self.store)
        unchecked.keys = None
        return self.integrity.sign(model, reason, actor, rotate, unchecked.integrity)
