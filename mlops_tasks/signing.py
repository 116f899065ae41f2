"""The keys that sign and check the registry's documents and audit events.

Two kinds of key:

- an **HMAC secret** (any text of 16 or more characters): whoever can check its signatures can
  also make them;
- an **Ed25519 key pair**: `ed25519:<base64 of the 32-byte private key>` signs, and the public
  key `ed25519-pub:<base64 of its 32 bytes>` only checks. A process that must trust the
  registry without being able to change it (the prediction service) gets the public key alone
  (`MLOPS_VERIFY_KEYS`), so a break-in there cannot forge a version into production.

`mlops keygen` makes an Ed25519 pair. An HMAC signature is 64 hex digits; an Ed25519 one is
`ed25519:` and 128 hex digits, so one store can hold both during a move from one kind to the
other (`mlops sign --rotate`). Keys are never logged or shown: each has a `label` that names
it without giving it away.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from dataclasses import dataclass, field
from typing import Any, Literal

from mlops_tasks.errors import UsageError

#: A shorter HMAC secret would be guessable; 32 random characters is what the docs suggest.
MIN_SIGNING_KEY = 16
PRIVATE_PREFIX = "ed25519:"
PUBLIC_PREFIX = "ed25519-pub:"
#: What an Ed25519 signature starts with (an HMAC signature is bare hex).
SIGNATURE_PREFIX = "ed25519:"

#: Who made a signature, as far as a keyring can tell (see `Keyring.who`).
Signer = Literal["current", "previous", "unsigned", "unknown"]


class HmacKey:
    """A shared secret: signs and checks with an HMAC-SHA256."""

    can_sign = True

    def __init__(self, secret: bytes) -> None:
        self._secret = secret
        self.label = "an HMAC key"

    def sign(self, data: bytes) -> str:
        return hmac.new(self._secret, data, hashlib.sha256).hexdigest()

    def verifies(self, data: bytes, signature: str) -> bool:
        return hmac.compare_digest(signature, self.sign(data))


class Ed25519Key:
    """An Ed25519 public key, and its private key when this process may sign."""

    def __init__(self, public: bytes, private: bytes | None = None) -> None:
        from cryptography.hazmat.primitives.asymmetric.ed25519 import (
            Ed25519PrivateKey,
            Ed25519PublicKey,
        )

        self._private = Ed25519PrivateKey.from_private_bytes(private) if private else None
        self._public = Ed25519PublicKey.from_public_bytes(public)
        self.public_text = PUBLIC_PREFIX + base64.b64encode(public).decode()
        self.label = f"Ed25519 key {hashlib.sha256(public).hexdigest()[:12]}"

    @property
    def can_sign(self) -> bool:
        return self._private is not None

    def sign(self, data: bytes) -> str:
        if self._private is None:
            raise UsageError(f"{self.label} is a public key: it checks signatures, never signs")
        return SIGNATURE_PREFIX + self._private.sign(data).hex()

    def verifies(self, data: bytes, signature: str) -> bool:
        from cryptography.exceptions import InvalidSignature

        if not signature.startswith(SIGNATURE_PREFIX):
            return False
        try:
            self._public.verify(bytes.fromhex(signature[len(SIGNATURE_PREFIX) :]), data)
        except (ValueError, InvalidSignature):
            return False
        return True


Key = HmacKey | Ed25519Key


def _key_bytes(text: str, prefix: str, source: str, what: str) -> bytes:
    body = text[len(prefix) :].strip().replace("-", "+").replace("_", "/")  # or URL-safe
    try:
        raw = base64.b64decode(body + "=" * (-len(body) % 4), validate=True)
    except (binascii.Error, ValueError):
        raw = b""
    if len(raw) != 32:
        raise UsageError(
            f"{source}: {prefix}... must be the base64 of a 32-byte Ed25519 {what} "
            "(`mlops keygen` makes a pair)"
        )
    return raw


def parse_key(text: str, source: str) -> Key:
    """The key `text` holds; UsageError naming `source` (never the key) when it is no key.
    An HMAC secret is used as given, blanks around it included (as it always was)."""
    secret, text = text, text.strip()
    if text.startswith(PUBLIC_PREFIX):
        return Ed25519Key(_key_bytes(text, PUBLIC_PREFIX, source, "public key"))
    if text.startswith(PRIVATE_PREFIX):
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
        from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

        private = _key_bytes(text, PRIVATE_PREFIX, source, "private key")
        public = (
            Ed25519PrivateKey.from_private_bytes(private)
            .public_key()
            .public_bytes(Encoding.Raw, PublicFormat.Raw)
        )
        return Ed25519Key(public, private)
    if len(text) < MIN_SIGNING_KEY:
        raise UsageError(
            f"{source} must be an HMAC key of at least {MIN_SIGNING_KEY} characters (e.g. "
            f"`openssl rand -hex 32`) or an Ed25519 key ({PRIVATE_PREFIX}..., `mlops keygen`)"
        )
    return HmacKey(secret.encode())


def parse_keys(raw: str, source: str) -> tuple[Key, ...]:
    """Comma-separated keys, each checked as `parse_key` does."""
    return tuple(parse_key(k, f"each key of {source}") for k in raw.split(",") if k.strip())


def check_verify_keys(raw: str, source: str) -> tuple[str, ...]:
    """Comma-separated Ed25519 public keys: a process given only these checks signatures and
    cannot make them. A private or HMAC key here is refused: it could forge what it checks."""
    keys = tuple(k.strip() for k in raw.split(",") if k.strip())
    for key in keys:
        if not key.startswith(PUBLIC_PREFIX):
            raise UsageError(
                f"{source} holds public keys only ({PUBLIC_PREFIX}..., `mlops keygen`); an "
                "HMAC or private key there could forge the signatures it checks"
            )
        parse_key(key, f"each key of {source}")
    return keys


@dataclass(frozen=True)
class Keyring:
    """The key a process signs with (`current`) and the ones it still accepts (`previous`).

    A keyring whose current key is public checks signatures and cannot make them: the
    registry then refuses every change with a clear error instead of writing it unsigned.
    """

    current: Key
    previous: tuple[Key, ...] = field(default=())

    @property
    def can_sign(self) -> bool:
        return self.current.can_sign

    def sign(self, data: bytes) -> str:
        if not self.current.can_sign:
            raise UsageError(
                "this process holds only public keys (MLOPS_VERIFY_KEYS): it checks the "
                "registry's signatures and cannot make them; change the registry where "
                "MLOPS_SIGNING_KEY is set"
            )
        return self.current.sign(data)

    def who(self, data: bytes, given: Any) -> Signer:
        """Who signed `data` with signature `given`: "current" (the current key), "previous"
        (a key accepted during a rotation), "unsigned", or "unknown" (no accepted key)."""
        if not isinstance(given, str) or not given:
            return "unsigned"
        if self.current.verifies(data, given):
            return "current"
        if any(k.verifies(data, given) for k in self.previous):
            return "previous"
        return "unknown"


def keyring(
    signing_key: str | None, previous: tuple[str, ...], verify_keys: tuple[str, ...]
) -> Keyring | None:
    """The keyring of a deployment's settings; None when no key is configured (nothing is
    signed or checked). With a signing key, the verify keys are accepted as previous ones;
    without one, the first verify key is the current key, and the process only checks."""
    accepted = [parse_key(k, "MLOPS_SIGNING_PREVIOUS_KEYS") for k in previous]
    public = [parse_key(k, "MLOPS_VERIFY_KEYS") for k in verify_keys]
    if signing_key:
        return Keyring(parse_key(signing_key, "MLOPS_SIGNING_KEY"), (*accepted, *public))
    if public:
        return Keyring(public[0], (*public[1:], *accepted))
    return None


def generate() -> tuple[str, str]:
    """A new Ed25519 pair: (private key text for MLOPS_SIGNING_KEY, public key text for
    MLOPS_VERIFY_KEYS)."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.serialization import (
        Encoding,
        NoEncryption,
        PrivateFormat,
        PublicFormat,
    )

    key = Ed25519PrivateKey.generate()
    private = key.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
    public = key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    return (
        PRIVATE_PREFIX + base64.b64encode(private).decode(),
        PUBLIC_PREFIX + base64.b64encode(public).decode(),
    )


def public_of(text: str, source: str) -> str:
    """The public key text of an Ed25519 private key (UsageError for an HMAC key)."""
    key = parse_key(text, source)
    if not isinstance(key, Ed25519Key):
        raise UsageError(f"{source} is an HMAC key: it has no public key (`mlops keygen`)")
    return key.public_text
