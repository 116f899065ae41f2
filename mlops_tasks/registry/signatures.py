"""Signatures of the registry's documents: JSON documents (the alias, the audit head, audit
events) carry one over their canonical JSON; a version's files (`metadata.sig`, the
`signature` of `status.json` and `evaluation.json`) carry one bound to the model, the version
number and the file's name (`_binding`). The keys (HMAC or Ed25519) are `signing.Keyring`'s.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from mlops_tasks.registry._common import sha256
from mlops_tasks.storage import encode_json

if TYPE_CHECKING:
    from mlops_tasks.signing import Keyring


class Signatures:
    """Signs and checks documents with a keyring; with none, nothing is signed or checked.
    A keyring of public keys only checks (`Keyring.sign` refuses)."""

    def __init__(self, keys: Keyring | None) -> None:
        self.keys = keys

    # Signatures ---------------------------------------------------------------------------
    def sign(self, data: bytes) -> str:
        assert self.keys is not None
        return self.keys.sign(data)

    def signer(self, data: bytes, given: Any) -> str:
        """Who signed `data` with signature `given`: "current" (the signing key), "previous"
        (a key accepted during a rotation), "unsigned", or "unknown" (no accepted key)."""
        assert self.keys is not None
        return self.keys.who(data, given)

    def signed(self, doc: dict[str, Any]) -> dict[str, Any]:
        """A JSON document (alias, status, evaluation, audit event) with its signature over
        its canonical JSON without the signature (unchanged without a key)."""
        if self.keys is None:
            return doc
        return {**doc, "signature": self.sign(encode_json(_unsigned(doc)))}

    def doc_signer(self, doc: dict[str, Any]) -> str:
        content = _unsigned(doc)
        who = self.signer(encode_json(content), doc.get("signature"))
        if who == "unknown" and (legacy := _encoded_with_non_finite(content)) is not None:
            who = self.signer(
                legacy, doc.get("signature")
            )  # signed before `encode_json` nulled them
        return who

    def file_signature(self, model: str, version: int, leaf: str, content: bytes) -> str:
        """The signature of a version's file: bound to its model, version number and name."""
        return _BOUND + self.sign(_binding(model, version, leaf, content))

    def file_signer(self, model: str, version: int, leaf: str, content: bytes, given: Any) -> str:
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
            who = self.signer(_binding(model, version, leaf, content), given[len(_BOUND) :])
            return "unknown" if who == "unsigned" else who
        return "legacy" if self.signer(content, given) in ("current", "previous") else "unknown"

    def signed_version_doc(
        self, model: str, version: int, leaf: str, doc: dict[str, Any]
    ) -> dict[str, Any]:
        """A version's `status.json` or `evaluation.json` with its bound signature (unchanged
        without a key)."""
        if self.keys is None:
            return doc
        content = encode_json(_unsigned(doc))
        return {**doc, "signature": self.file_signature(model, version, leaf, content)}

    def version_doc_signer(self, model: str, version: int, leaf: str, doc: dict[str, Any]) -> str:
        content = _unsigned(doc)
        given = doc.get("signature")
        who = self.file_signer(model, version, leaf, encode_json(content), given)
        if who == "unknown" and (legacy := _encoded_with_non_finite(content)) is not None:
            who = self.file_signer(model, version, leaf, legacy, given)
        return who

    def signature_problem(self, doc: dict[str, Any], model: str = "MODEL") -> str | None:
        if self.keys is None:
            return None
        return _SIGNATURE_PROBLEMS.get(self.doc_signer(doc), "").format(model=model) or None


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
