"""Optional bearer-token auth for the prediction service.

`MLOPS_SERVING_API_TOKEN` holds one token or a comma-separated list; each entry is `TOKEN` or
`NAME:TOKEN`, each token at least 16 characters. A value that cannot be what was meant (no
entry, an empty entry, name or token, a short token) stops the service at start, saying which
entry is wrong and why (`settings.api_token_entries`), instead of turning auth off. When it is
set, every route under `/v1/` and `/metrics` needs `Authorization: Bearer TOKEN` (401
otherwise), checked by a pure ASGI middleware before the body is read. `/healthz`, `/readyz`,
the docs and `/openapi.json` stay open; `/admin/reload` keeps its own `MLOPS_SERVING_TOKEN`.
When it is unset, nothing changes and every caller is the client `anonymous`.

The matching entry's NAME (or `token-` and 8 hex digits of the token's SHA-256 when it has no
name) is the client identity: feedback is accepted only from the client that made the
prediction, and the stored label records who sent it. Tokens are compared in constant time
(SHA-256 digests with `hmac.compare_digest`, against every configured token).
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass

from mlops_tasks.serving.limits import ASGIApp, Receive, Scope, Send, send_json
from mlops_tasks.settings import api_token_entries

ENV = "MLOPS_SERVING_API_TOKEN"
ANONYMOUS = "anonymous"
CLIENT_KEY = "mlops.client"  # where the middleware leaves the caller's identity in the scope
PROTECTED_PREFIXES = ("/v1/", "/metrics")


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8", "surrogateescape")).digest()


@dataclass(frozen=True)
class ApiTokens:
    """The accepted tokens, as (client name, SHA-256 of the token)."""

    entries: tuple[tuple[str, bytes], ...] = ()

    @property
    def enabled(self) -> bool:
        return bool(self.entries)

    @classmethod
    def parse(cls, value: str | list[str] | None) -> ApiTokens:
        """The tokens of `value` (None, "" or []: auth off); UsageError for a value that
        cannot be meant (`settings.api_token_entries`)."""
        if not value:
            return cls()
        entries: list[tuple[str, bytes]] = []
        for name, token in api_token_entries(value):
            digest = _digest(token)
            entries.append((name or f"token-{digest.hex()[:8]}", digest))
        return cls(tuple(entries))

    def identify(self, authorization: str | None) -> str | None:
        """The client a bearer header belongs to, or None. Every token is compared."""
        if not authorization:
            return None
        scheme, _, given = authorization.partition(" ")
        if scheme.lower() != "bearer" or not given.strip():
            return None
        digest = _digest(given.strip())
        found = None
        for name, expected in self.entries:
            if hmac.compare_digest(digest, expected) and found is None:
                found = name
        return found


def protected(path: str) -> bool:
    return path.startswith(PROTECTED_PREFIXES)


class BearerAuth:
    """Refuses protected routes without a valid bearer token; records the caller's identity."""

    def __init__(self, app: ASGIApp, tokens: ApiTokens) -> None:
        self.app = app
        self.tokens = tokens

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if not self.tokens.enabled:
            scope[CLIENT_KEY] = ANONYMOUS
            await self.app(scope, receive, send)
            return
        header = None
        for name, value in scope.get("headers", ()):
            if name == b"authorization":
                header = value.decode("latin-1")
                break
        client = self.tokens.identify(header)
        if client is None and protected(scope.get("path", "")):
            msg = "missing bearer token" if header is None else "invalid bearer token"
            detail = f"{msg}: set Authorization: Bearer <token> (the service has {ENV} set)"
            challenge = [(b"www-authenticate", b'Bearer realm="mlops"')]
            await send_json(send, 401, {"detail": detail}, challenge)
            return
        scope[CLIENT_KEY] = client or ANONYMOUS
        await self.app(scope, receive, send)
