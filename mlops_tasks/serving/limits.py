"""Bounded inputs for the prediction service.

Everything a client sends is bounded before it costs the service anything:

- the request body, by `BodySizeLimit`, a pure ASGI middleware that answers 413 before the body
  is parsed (from `Content-Length`, or by counting a chunked body as it arrives);
- every field, by the request schemas: numbers are finite (`NaN`, `Infinity`, `1e400` are 422s),
  text is valid Unicode (no lone surrogates) and at most `max_string_length` characters, lists
  hold at most `MAX_ROWS` items (counted before any item is validated);
- every 422 answer, by `validation_error_handler`: at most `MAX_ERRORS_LISTED` errors, each
  echoing at most `MAX_INPUT_ECHO` characters of its input.

The limits come from the deployment's settings when the app is created (`Limits.from_settings`).
"""

from __future__ import annotations

import json
import math
from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import AfterValidator, AllowInfNan, BeforeValidator, Field, Strict, StringConstraints
from pydantic_core import PydanticCustomError

if TYPE_CHECKING:
    from mlops_tasks.settings import Settings

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

MAX_ROWS = 10_000  # records per predict request, labels per feedback request
MAX_ERRORS_LISTED = 20  # validation errors listed in one 422 answer
MAX_INPUT_ECHO = 100  # characters of an offending input echoed back in a 422
DEFAULT_MAX_BODY_BYTES = 16 * 1024 * 1024  # 10,000 rows of a 25-feature model are ~6.5 MB
DEFAULT_MAX_STRING_LENGTH = 1_024


@dataclass(frozen=True)
class Limits:
    """Input bounds of one service instance."""

    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    max_string_length: int = DEFAULT_MAX_STRING_LENGTH
    max_rows: int = MAX_ROWS

    @classmethod
    def from_settings(cls, settings: Settings) -> Limits:
        """`MLOPS_SERVING_MAX_BODY_BYTES` and `MLOPS_SERVING_MAX_STRING_LENGTH` override."""
        return cls(
            max_body_bytes=settings.serving_max_body_bytes or DEFAULT_MAX_BODY_BYTES,
            max_string_length=settings.serving_max_string_length or DEFAULT_MAX_STRING_LENGTH,
        )


# ---------------------------------------------------------------------------------------------
# Field types


def _valid_unicode(value: str) -> str:
    """Refuse text that cannot be written as UTF-8 (a lone surrogate such as "\\ud800")."""
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as err:
            raise PydanticCustomError(
                "invalid_unicode",
                "String should be valid Unicode: a lone surrogate at position {position}",
                {"position": err.start},
            ) from None
    return value


# Finite numbers only: JSON's NaN, Infinity and 1e400 (which parses as infinity) are refused.
FiniteNumber = Annotated[float, Strict(), AllowInfNan(False)]
LabelInt = Annotated[int, Strict(), Field(ge=-(2**53), le=2**53)]  # exact as a float too


def _code_as_text(value: Any) -> Any:
    """A category given as a code (`3`, `true`) is its canonical text (`"3"`, `"1"`), so one
    type, text, carries every category and a bad value gets one error, not one per type."""
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int) and abs(value) <= 2**53:
        return str(value)
    return value


def category(max_length: int) -> Any:
    """A categorical value: text, or an integer or boolean code (as its canonical text)."""
    return Annotated[text(max_length), BeforeValidator(_code_as_text)]


def text(max_length: int) -> Any:
    """Strict, valid-Unicode text of at most `max_length` characters."""
    return Annotated[
        str, Strict(), StringConstraints(max_length=max_length), AfterValidator(_valid_unicode)
    ]


def at_most(max_items: int, what: str) -> Callable[[Any], Any]:
    """A before-validator refusing a list longer than `max_items` without validating its items
    (pydantic would otherwise check every item of a 100,000-item list before its length)."""

    def check(value: Any) -> Any:
        if isinstance(value, list) and len(value) > max_items:
            raise PydanticCustomError(
                "too_long",
                "{what} should have at most {max_length} items, not {actual_length}",
                {"what": what, "max_length": max_items, "actual_length": len(value)},
            )
        return value

    return check


# ---------------------------------------------------------------------------------------------
# 422 answers that never echo large inputs


def shorten(value: Any, limit: int = MAX_INPUT_ECHO) -> Any:
    """A JSON-safe, bounded stand-in for an offending input."""
    if value is None or isinstance(value, bool | int):
        if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= 10**limit:
            return f"<integer of {len(str(abs(value)))} digits>"
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)  # JSON has no inf/nan
    if isinstance(value, bytes | bytearray):
        value = bytes(value[: limit * 4]).decode("utf-8", "replace")
    if isinstance(value, str):
        safe = value[:limit].encode("utf-8", "backslashreplace").decode("utf-8")
        return safe if len(value) <= limit else f"{safe}… ({len(value)} characters)"
    if isinstance(value, list | tuple):
        if len(value) > 3:
            return f"<list of {len(value)} items>"
        out = [shorten(v, limit) for v in value]
    elif isinstance(value, dict):
        if len(value) > 5:
            return f"<object with {len(value)} keys>"
        out = {shorten(str(k), 40): shorten(v, limit) for k, v in value.items()}  # type: ignore[assignment]
    else:
        return shorten(str(value), limit)
    encoded = json.dumps(out)
    return out if len(encoded) <= limit * 2 else f"<{type(value).__name__} of {len(value)}>"


def safe_errors(errors: Sequence[Any], listed: int = MAX_ERRORS_LISTED) -> list[Any]:
    """At most `listed` errors, each with a bounded `input` and a JSON-safe `ctx`."""
    out = []
    for err in list(errors)[:listed]:
        item = {
            "type": err.get("type"),
            "loc": [shorten(p, 60) if isinstance(p, str) else p for p in err.get("loc", ())],
            "msg": shorten(str(err.get("msg", "")), 300),
            "input": shorten(err.get("input")),
        }
        if err.get("ctx"):
            item["ctx"] = {str(k): shorten(v) for k, v in err["ctx"].items()}
        out.append(jsonable_encoder(item))
    return out


def error_body(errors: Sequence[Any]) -> dict[str, Any]:
    body: dict[str, Any] = {"detail": safe_errors(errors)}
    if len(errors) > MAX_ERRORS_LISTED:
        body["errors_total"] = len(errors)
        body["errors_listed"] = MAX_ERRORS_LISTED
    return body


async def validation_error_handler(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    return JSONResponse(error_body(exc.errors()), status_code=422)


# ---------------------------------------------------------------------------------------------
# Request body size


class BodySizeLimit:
    """Answers 413 to a request whose body is larger than `max_bytes`, before it is parsed.

    A declared `Content-Length` over the limit is refused without reading the body. Otherwise
    the body is read here, counting bytes as they arrive (a chunked body has no length), and
    handed on whole to the app, which would have read it whole anyway."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None and declared > self.max_bytes:
            await self._refuse(send, declared)
            return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                await self.app(scope, _replay([message], receive), send)
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                await self._refuse(send, None)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = {"type": "http.request", "body": b"".join(chunks), "more_body": False}
        await self.app(scope, _replay([body], receive), send)

    async def _refuse(self, send: Send, declared: int | None) -> None:
        size = f"{declared} bytes" if declared is not None else f"over {self.max_bytes} bytes"
        detail = (
            f"request body too large ({size}): the limit is {self.max_bytes} bytes "
            "(MLOPS_SERVING_MAX_BODY_BYTES)"
        )
        await send_json(send, 413, {"detail": detail}, [(b"connection", b"close")])


async def send_json(
    send: Send, status: int, body: dict[str, Any], headers: list[tuple[bytes, bytes]]
) -> None:
    """Answer from ASGI middleware, before the app runs: a small JSON body and `headers`."""
    payload = json.dumps(body).encode()
    length = str(len(payload)).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", length),
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": payload, "more_body": False})


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


def _replay(messages: list[Message], receive: Receive) -> Receive:
    pending = list(messages)

    async def replay() -> Message:
        if pending:
            return pending.pop(0)
        return await receive()

    return replay
