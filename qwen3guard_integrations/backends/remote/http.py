"""The HTTP lines of the serving backends that go through ``httpx`` (OpenAI-compatible requests,
health and info routes): one sync and one async function per verb, sharing their parsing."""

from __future__ import annotations

import json
from typing import Any

from ...core.errors import BackendError, BackendProtocolError
from .protocol import error_from_body, transport_error

__all__ = ["HttpResult", "aget", "apost_json", "get", "parse_json", "post_json", "raise_for_status"]


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
    except (ValueError, UnicodeDecodeError):
        raise BackendProtocolError(
            f"{backend} endpoint {endpoint} answered with a body that is not JSON: {body[:120]!r}",
            backend=backend,
        ) from None


def raise_for_status(result: HttpResult, *, backend: str, endpoint: str) -> None:
    """Raise the typed error for a non-2xx answer (the headers ride along for Retry-After)."""
    if 200 <= result.status < 300:
        return
    err = error_from_body(result.status, result.body, backend=backend, endpoint=endpoint)
    err.retry_headers = result.headers
    raise err


def _mapped(exc: Exception, backend: str, endpoint: str) -> BackendError:

    return transport_error(exc, backend=backend, endpoint=endpoint) or BackendError(
        f"{backend} request to {endpoint} failed: {type(exc).__name__}: {exc}", backend=backend
    )


def _result(response: Any) -> HttpResult:
    return HttpResult(response.status_code, dict(response.headers), response.content)


def get(client: Any, url: str, *, backend: str, endpoint: str) -> HttpResult:
    """GET with an ``httpx.Client``; transport failures become typed errors."""
    try:
        return _result(client.get(url))
    except Exception as exc:
        raise _mapped(exc, backend, endpoint) from exc


def post_json(client: Any, url: str, body: Any, *, backend: str, endpoint: str) -> HttpResult:
    """POST a JSON body with an ``httpx.Client``."""
    try:
        return _result(client.post(url, json=body))
    except Exception as exc:
        raise _mapped(exc, backend, endpoint) from exc


async def aget(client: Any, url: str, *, backend: str, endpoint: str) -> HttpResult:
    """GET with an ``httpx.AsyncClient``."""
    try:
        return _result(await client.get(url))
    except Exception as exc:
        raise _mapped(exc, backend, endpoint) from exc


async def apost_json(
    client: Any, url: str, body: Any, *, backend: str, endpoint: str
) -> HttpResult:
    """POST a JSON body with an ``httpx.AsyncClient``."""
    try:
        return _result(await client.post(url, json=body))
    except Exception as exc:
        raise _mapped(exc, backend, endpoint) from exc
