"""The wire format of the guard server (``qwen3guard serve``), as pure functions (no I/O).

Shared by the server (`qwen3guard_integrations.serving`) and its clients
(`GuardServerGenBackend`, the remote Stream sessions), so both ends read one definition.

* Conversations travel as lists of ``{"role", "content"}`` dicts, verdicts as `Verdict.to_dict`.
* Every error is one JSON object ``{"error": {"type", "message"}}`` with an HTTP status (or, on
  the Stream WebSocket, a frame ``{"op": "error", "error": {...}}``). `error_body` builds it
  from an exception; `error_from_wire` turns it back into the typed exception a local guard
  would raise: ``InvalidInputError`` / ``ConfigurationError`` / ``SessionClosedError`` for bad
  input, `BackendHTTPError` (with ``status`` and ``error_type``) for everything else.
* Response token bytes travel as hex strings, so a client decodes response text exactly as the
  tokenizer does (byte-level, a character cut between tokens shows as U+FFFD) without loading it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ...core.errors import (
    BackendError,
    BackendHTTPError,
    BackendProtocolError,
    ConfigurationError,
    InvalidInputError,
    Qwen3GuardError,
    SessionClosedError,
)
from ...core.messages import Message
from ...core.verdict import Verdict

__all__ = [
    "BACKEND_NAME",
    "ERROR_STATUS",
    "ErrorType",
    "conversation_json",
    "decode_bytes",
    "error_body",
    "error_from_wire",
    "error_status",
    "error_type_of",
    "public_message",
    "verdict_from_wire",
]

#: The `Qwen3Guard.backend.name` of a guard that checks through a guard server.
BACKEND_NAME = "guard-server"


class ErrorType:
    """The ``error.type`` values the server sends (with their HTTP status in `ERROR_STATUS`)."""

    INVALID_INPUT = "InvalidInputError"
    CONFIGURATION = "ConfigurationError"
    SESSION_CLOSED = "SessionClosedError"
    UNAUTHORIZED = "Unauthorized"
    NOT_FOUND = "NotFound"
    TOO_LARGE = "MessageTooLarge"
    RATE_LIMITED = "RateLimited"
    TOO_MANY_SESSIONS = "TooManySessions"
    BUSY = "ServerBusy"
    NOT_CONFIGURED = "NotConfigured"
    BACKEND = "BackendError"
    INTERNAL = "InternalError"


ERROR_STATUS: dict[str, int] = {
    ErrorType.INVALID_INPUT: 422,
    ErrorType.CONFIGURATION: 422,
    ErrorType.SESSION_CLOSED: 409,
    ErrorType.UNAUTHORIZED: 401,
    ErrorType.NOT_FOUND: 404,
    ErrorType.TOO_LARGE: 413,
    ErrorType.RATE_LIMITED: 429,
    ErrorType.TOO_MANY_SESSIONS: 429,
    ErrorType.BUSY: 503,
    ErrorType.NOT_CONFIGURED: 501,
    ErrorType.BACKEND: 502,
    ErrorType.INTERNAL: 500,
}

_INPUT_TYPES: dict[str, type[Qwen3GuardError]] = {
    ErrorType.INVALID_INPUT: InvalidInputError,
    ErrorType.CONFIGURATION: ConfigurationError,
    ErrorType.SESSION_CLOSED: SessionClosedError,
}


def error_type_of(exc: BaseException) -> str:
    """The wire ``error.type`` of an exception raised while serving a request."""
    if isinstance(exc, SessionClosedError):
        return ErrorType.SESSION_CLOSED
    if isinstance(exc, ConfigurationError):
        return ErrorType.CONFIGURATION
    if isinstance(exc, InvalidInputError):
        return ErrorType.INVALID_INPUT
    if isinstance(exc, BackendError):
        return ErrorType.BACKEND
    return ErrorType.INTERNAL


def public_message(exc: BaseException) -> str:
    """What a client may read of an error: this package's own messages (which never hold a
    secret), else the exception's type only."""
    if isinstance(exc, Qwen3GuardError):
        return str(exc)
    return f"{type(exc).__name__} while serving the request"


def error_status(error_type: str) -> int:
    """The HTTP status of an ``error.type``."""
    return ERROR_STATUS.get(error_type, 500)


def error_body(error_type: str, message: str) -> dict[str, Any]:
    """``{"error": {"type", "message"}}``."""
    return {"error": {"type": error_type, "message": message}}


def error_from_wire(
    data: Any, *, status: int | None, endpoint: str, backend: str = BACKEND_NAME
) -> Exception:
    """The typed exception for an error body (or frame) the server sent.

    Input errors come back as the class a local guard raises; anything else is a
    `BackendHTTPError` carrying ``status`` and the server's ``error_type``. A body that is not an
    error object is a `BackendProtocolError`.
    """
    err = data.get("error") if isinstance(data, Mapping) else None
    if not isinstance(err, Mapping) or not isinstance(err.get("type"), str):
        return BackendProtocolError(
            f"guard server {endpoint} answered {status} with a body that is not an error object: "
            f"{str(data)[:160]!r}",
            status=status,
            backend=backend,
        )
    kind, message = str(err["type"]), str(err.get("message", ""))
    if kind in _INPUT_TYPES:
        return _INPUT_TYPES[kind](message)
    return BackendHTTPError(
        f"guard server {endpoint}: {kind}: {message}",
        status=status if status is not None else error_status(kind),
        error=message,
        error_type=kind,
        backend=backend,
    )


def conversation_json(conversation: Sequence[Message]) -> list[dict[str, str]]:
    """A conversation as JSON-ready ``{"role", "content"}`` dicts."""
    return [m.as_dict() for m in conversation]


def verdict_from_wire(data: Any, *, endpoint: str, backend: str = BACKEND_NAME) -> Verdict:
    """A `Verdict` from its `Verdict.to_dict` JSON; anything else is a `BackendProtocolError`."""
    try:
        return Verdict.from_dict(data)
    except (ValueError, TypeError) as exc:
        raise BackendProtocolError(
            f"guard server {endpoint} sent a verdict that does not validate: {exc}",
            backend=backend,
        ) from None


def decode_bytes(parts: Sequence[bytes]) -> str:
    """Join token bytes and decode them as the byte-level tokenizer does (U+FFFD for a cut)."""
    return b"".join(parts).decode("utf-8", errors="replace")
