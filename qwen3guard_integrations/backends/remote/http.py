"""The HTTP lines of the serving backends, through ``httpx`` (generate and completions requests,
health and info routes): one sync and one async function per verb, sharing their parsing.

Every request runs under the check's deadline (`deadline_scope`): the client's timeout is set to
the time left, and the body is read in chunks with the deadline checked after each, so a server
that drips bytes cannot hold a check past its ``timeout`` (retries included). Redirects are never
followed (a 3xx is an error: the user's text and headers go to the URL the user gave, nowhere
else). A body over `MAX_BODY_BYTES` is a protocol error. Error texts never quote the URL's
secrets.
"""

from __future__ import annotations

import contextvars
import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from ...core.errors import BackendError, BackendHTTPError, BackendProtocolError, BackendTimeoutError
from .protocol import error_from_body, transport_error
from .secrets import scrub, url_secrets

__all__ = [
    "MAX_BODY_BYTES",
    "HttpResult",
    "aget",
    "apost_json",
    "deadline_left",
    "deadline_scope",
    "get",
    "parse_json",
    "post_json",
    "raise_for_status",
]

#: The largest answer body read (a verdict is a few hundred bytes; details a few KiB).
MAX_BODY_BYTES = 8 * 1024 * 1024

_DEADLINE: contextvars.ContextVar[float | None] = contextvars.ContextVar(
    "qwen3guard_deadline", default=None
)


@contextmanager
def deadline_scope(seconds: float | None = None, *, at: float | None = None) -> Iterator[float]:
    """Run the block under a deadline ``seconds`` from now (or at monotonic time ``at``); an
    enclosing, earlier deadline wins."""
    deadline = at if at is not None else time.monotonic() + float(seconds or 0.0)
    outer = _DEADLINE.get()
    if outer is not None:
        deadline = min(deadline, outer)
    token = _DEADLINE.set(deadline)
    try:
        yield deadline
    finally:
        _DEADLINE.reset(token)


def deadline_left(*, backend: str, endpoint: str) -> float | None:
    """Seconds left before the current deadline (None: no deadline); `BackendTimeoutError`
    when it has passed."""
    deadline = _DEADLINE.get()
    if deadline is None:
        return None
    left = deadline - time.monotonic()
    if left <= 0:
        raise BackendTimeoutError(
            f"{backend} endpoint {endpoint} did not answer within the check's timeout",
            backend=backend,
        )
    return left


class HttpResult:
    """Status, headers and body of one answer."""

    def __init__(self, status: int, headers: dict[str, str], body: bytes) -> None:
        self.status = status
        self.headers = headers
        self.body = body

    def json(self, *, backend: str, endpoint: str) -> Any:
        """The body as JSON, or `BackendProtocolError`."""
        return parse_json(self.body, backend=backend, endpoint=endpoint)


def parse_json(body: bytes, *, backend: str, endpoint: str) -> Any:
    """Parse a 2xx body; a body that is not JSON is a `BackendProtocolError`."""
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise BackendProtocolError(
            f"{backend} endpoint {endpoint} answered with a body that is not JSON: {body[:120]!r}",
            backend=backend,
        ) from None


def raise_for_status(result: HttpResult, *, backend: str, endpoint: str) -> None:
    """Raise the typed error for a non-2xx answer (the headers ride along for Retry-After)."""
    if 200 <= result.status < 300:
        return
    if 300 <= result.status < 400:
        err: BackendHTTPError = BackendHTTPError(
            f"{backend} endpoint {endpoint} answered HTTP {result.status} (a redirect); "
            "redirects are never followed: give the guard the server's own URL",
            status=result.status,
            backend=backend,
        )
    else:
        err = error_from_body(result.status, result.body, backend=backend, endpoint=endpoint)
    err.retry_headers = result.headers
    raise err


def _mapped(exc: Exception, backend: str, endpoint: str, url: str) -> BackendError:
    if isinstance(exc, BackendError):
        return exc
    mapped = transport_error(exc, backend=backend, endpoint=endpoint) or BackendError(
        f"{backend} request to {endpoint} failed: {type(exc).__name__}: {exc}", backend=backend
    )
    clean = scrub(str(mapped), *url_secrets(url))
    if clean != str(mapped):
        mapped = type(mapped)(clean, backend=backend)
    return mapped


def _options(body: Any, backend: str, endpoint: str) -> dict[str, Any]:
    opts: dict[str, Any] = {"follow_redirects": False}
    left = deadline_left(backend=backend, endpoint=endpoint)
    if left is not None:
        opts["timeout"] = left
    if body is not None:
        opts["json"] = body
    return opts


def _add(chunks: list[bytes], chunk: bytes, size: int, backend: str, endpoint: str) -> int:
    size += len(chunk)
    if size > MAX_BODY_BYTES:
        raise BackendProtocolError(
            f"{backend} endpoint {endpoint} answered with a body over {MAX_BODY_BYTES} bytes",
            backend=backend,
        )
    chunks.append(chunk)
    deadline_left(backend=backend, endpoint=endpoint)  # a dripping server: stop at the deadline
    return size


def _request(client: Any, method: str, url: str, body: Any, backend: str, endpoint: str) -> Any:
    try:
        with client.stream(method, url, **_options(body, backend, endpoint)) as response:
            chunks: list[bytes] = []
            size = 0
            for chunk in response.iter_bytes():
                size = _add(chunks, chunk, size, backend, endpoint)
            return HttpResult(response.status_code, dict(response.headers), b"".join(chunks))
    except Exception as exc:
        raise _mapped(exc, backend, endpoint, url) from exc


async def _arequest(
    client: Any, method: str, url: str, body: Any, backend: str, endpoint: str
) -> Any:
    try:
        async with client.stream(method, url, **_options(body, backend, endpoint)) as response:
            chunks: list[bytes] = []
            size = 0
            async for chunk in response.aiter_bytes():
                size = _add(chunks, chunk, size, backend, endpoint)
            return HttpResult(response.status_code, dict(response.headers), b"".join(chunks))
    except Exception as exc:
        raise _mapped(exc, backend, endpoint, url) from exc


def get(client: Any, url: str, *, backend: str, endpoint: str) -> HttpResult:
    """GET with an ``httpx.Client``; transport failures become typed errors."""
    result: HttpResult = _request(client, "GET", url, None, backend, endpoint)
    return result


def post_json(client: Any, url: str, body: Any, *, backend: str, endpoint: str) -> HttpResult:
    """POST a JSON body with an ``httpx.Client``."""
    result: HttpResult = _request(client, "POST", url, body, backend, endpoint)
    return result


async def aget(client: Any, url: str, *, backend: str, endpoint: str) -> HttpResult:
    """GET with an ``httpx.AsyncClient``."""
    result: HttpResult = await _arequest(client, "GET", url, None, backend, endpoint)
    return result


async def apost_json(
    client: Any, url: str, body: Any, *, backend: str, endpoint: str
) -> HttpResult:
    """POST a JSON body with an ``httpx.AsyncClient``."""
    result: HttpResult = await _arequest(client, "POST", url, body, backend, endpoint)
    return result
