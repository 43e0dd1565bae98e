"""`GuardServerGenBackend`: Gen checks through a guard server (``qwen3guard serve``).

The server runs the Gen model (or fronts a vLLM / TGI cluster) and answers ``POST
/v1/check_batch`` with one `Verdict.to_dict` or one typed error per conversation. No tokenizer
or torch is needed here. ``Qwen3Guard.from_server(url)`` wraps this backend, so the client-side
policy (blocking, fail-open) applies to the server's verdicts exactly as to a local model's.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from ...core.deps import require
from ...core.errors import BackendError, BackendProtocolError, ConfigurationError
from ...core.messages import Message
from ...core.verdict import Verdict
from ..base import BackendHealth
from . import tracing
from .guard_wire import (
    BACKEND_NAME,
    conversation_json,
    error_from_wire,
    verdict_from_wire,
)
from .http import HttpResult, aget, get, parse_json
from .protocol import transport_error

__all__ = ["GuardServerGenBackend", "auth_headers", "check_url"]


def check_url(url: str) -> str:
    """``url`` without a trailing slash; `ConfigurationError` unless it is http(s)."""
    if not isinstance(url, str) or not url.startswith(("http://", "https://")):
        raise ConfigurationError(
            f"the guard server URL must start with http:// or https://: {url!r}"
        )
    return url.rstrip("/")


def auth_headers(token: str | None, headers: dict[str, str] | None = None) -> dict[str, str]:
    """``headers`` plus ``Authorization: Bearer <token>`` when a token is given."""
    out = dict(headers or {})
    if token is not None:
        if not isinstance(token, str) or not token:
            raise ConfigurationError("token must be a non-empty string")
        out["Authorization"] = f"Bearer {token}"
    return out


class GuardServerGenBackend:
    """A `GenBackend` whose model runs behind a guard server at ``url``.

    Args:
        url: the server's base URL (``http://host:8000``).
        token: the server's bearer token (``--auth-token``), if it has one.
        headers: extra HTTP headers for every request.
        timeout: seconds per request.
        model_id: the served model's name; read from ``/v1/info`` when not given.
    """

    name = BACKEND_NAME
    coalesce = False

    def __init__(
        self,
        url: str,
        *,
        token: str | None = None,
        headers: dict[str, str] | None = None,
        timeout: float = 30.0,
        model_id: str | None = None,
    ) -> None:
        self.endpoint: str | None = check_url(url)
        self._url = self.endpoint
        if not isinstance(timeout, (int, float)) or timeout <= 0:
            raise ConfigurationError(f"timeout must be a positive number, got {timeout!r}")
        self._headers = auth_headers(token, headers)
        self._timeout = float(timeout)
        self._httpx = require("httpx", "serve")
        self._client = self._httpx.Client(headers=self._headers, timeout=self._timeout)
        self._aclients: dict[int, Any] = {}
        self.model_id = model_id or ""

    @classmethod
    def connect(cls, url: str, **kwargs: Any) -> GuardServerGenBackend:
        """Build the backend and read the served Gen model's name from ``/v1/info``."""
        backend = cls(url, **kwargs)
        if not backend.model_id:
            info = backend._info(get(backend._client, f"{backend._url}/v1/info", **backend._ctx()))
            backend.model_id = str(info.get("gen_model") or "")
        return backend

    def _ctx(self) -> dict[str, str]:
        return {"backend": self.name, "endpoint": self._url}

    def _info(self, result: HttpResult) -> dict[str, Any]:
        if result.status != 200:
            raise error_from_wire(
                _body(result), status=result.status, endpoint=self._url, backend=self.name
            )
        data = result.json(**self._ctx())
        if not isinstance(data, dict):
            raise BackendProtocolError(
                f"{self._url}/v1/info is not a JSON object", backend=self.name
            )
        if not data.get("gen_model"):
            raise ConfigurationError(f"the guard server at {self._url} serves no Gen model")
        return data

    # --- checks --------------------------------------------------------------------------------
    def _body(self, conversations: Sequence[Sequence[Message]], fast: bool) -> dict[str, Any]:
        return {"conversations": [conversation_json(c) for c in conversations], "fast": fast}

    def _parse(self, result: HttpResult, n: int) -> list[Verdict | Exception]:
        if result.status != 200:
            err = error_from_wire(
                _body(result), status=result.status, endpoint=self._url, backend=self.name
            )
            return [err] * n
        data = result.json(**self._ctx())
        items = data.get("results") if isinstance(data, dict) else None
        if not isinstance(items, list) or len(items) != n:
            raise BackendProtocolError(
                f"guard server {self._url} answered a batch of {n} with {str(data)[:120]!r}",
                backend=self.name,
            )
        out: list[Verdict | Exception] = []
        for item in items:
            if isinstance(item, dict) and "verdict" in item:
                verdict = verdict_from_wire(item["verdict"], endpoint=self._url)
                out.append(verdict.model_copy(update={"endpoint": self._url}))
            else:
                out.append(error_from_wire(item, status=None, endpoint=self._url))
        return out

    def check_batch(
        self, conversations: Sequence[Sequence[Message]], *, fast: bool = True
    ) -> list[Verdict | Exception]:
        """POST the conversations to ``/v1/check_batch``; one verdict or error each."""
        if not conversations:
            return []
        with tracing.span(tracing.CHECK_SPAN, _client_attrs(self), kind="client") as sp:
            started = time.perf_counter()
            try:
                response = self._client.post(
                    f"{self._url}/v1/check_batch",
                    json=self._body(conversations, fast),
                    headers=tracing.inject(),
                )
            except Exception as exc:
                raise self._transport(exc) from exc
            result = HttpResult(response.status_code, dict(response.headers), response.content)
            out = self._parse(result, len(conversations))
            _record(sp, out, started)
            return out

    async def acheck_batch(
        self, conversations: Sequence[Sequence[Message]], *, fast: bool = True
    ) -> list[Verdict | Exception]:
        """Async twin of `check_batch` (``httpx.AsyncClient``, one per event loop)."""
        if not conversations:
            return []
        with tracing.span(tracing.CHECK_SPAN, _client_attrs(self), kind="client") as sp:
            started = time.perf_counter()
            try:
                response = await self._aclient().post(
                    f"{self._url}/v1/check_batch",
                    json=self._body(conversations, fast),
                    headers=tracing.inject(),
                )
            except Exception as exc:
                raise self._transport(exc) from exc
            result = HttpResult(response.status_code, dict(response.headers), response.content)
            out = self._parse(result, len(conversations))
            _record(sp, out, started)
            return out

    def _transport(self, exc: Exception) -> BackendError:
        return transport_error(exc, backend=self.name, endpoint=self._url) or BackendError(
            f"guard server request to {self._url} failed: {type(exc).__name__}: {exc}",
            backend=self.name,
        )

    def _aclient(self) -> Any:
        import asyncio

        key = id(asyncio.get_running_loop())
        client = self._aclients.get(key)
        if client is None:
            client = self._httpx.AsyncClient(headers=self._headers, timeout=self._timeout)
            self._aclients[key] = client
        return client

    # --- health --------------------------------------------------------------------------------
    def _health(self, result: HttpResult | Exception, started: float) -> BackendHealth:
        latency = (time.perf_counter() - started) * 1000
        if isinstance(result, Exception):
            return BackendHealth(False, self.name, self._url, error=str(result), latency_ms=latency)
        body = _body(result)
        return BackendHealth(
            result.status == 200,
            self.name,
            self._url,
            status=result.status,
            info=body if isinstance(body, dict) else {},
            error=None if result.status == 200 else str(body)[:200],
            latency_ms=latency,
        )

    def health(self) -> BackendHealth:
        """The server's ``/ready``."""
        started = time.perf_counter()
        try:
            return self._health(get(self._client, f"{self._url}/ready", **self._ctx()), started)
        except Exception as exc:
            return self._health(exc, started)

    async def ahealth(self) -> BackendHealth:
        """Async twin of `health`."""
        started = time.perf_counter()
        try:
            result = await aget(self._aclient(), f"{self._url}/ready", **self._ctx())
            return self._health(result, started)
        except Exception as exc:
            return self._health(exc, started)

    def close(self) -> None:
        """Close the HTTP connections."""
        self._client.close()

    async def aclose(self) -> None:
        """Close the sync client and this event loop's async client."""
        self._client.close()
        import asyncio

        client = self._aclients.pop(id(asyncio.get_running_loop()), None)
        if client is not None:
            await client.aclose()


def _body(result: HttpResult) -> Any:
    try:
        return parse_json(result.body, backend=BACKEND_NAME, endpoint="")
    except BackendProtocolError:
        return {"raw": result.body[:200].decode("utf-8", "replace")}


def _client_attrs(backend: GuardServerGenBackend) -> dict[str, Any]:
    return {"qwen3guard.backend": backend.name, "qwen3guard.model": backend.model_id}


def _record(sp: Any, results: list[Verdict | Exception], started: float) -> None:
    verdicts = [r for r in results if isinstance(r, Verdict)]
    if len(results) == 1 and verdicts:
        attrs = tracing.verdict_attributes(verdicts[0], blocked=False)
        attrs.pop("qwen3guard.blocked")  # the client's policy decides; the guard object records it
        sp.set_attributes(attrs)
    sp.set_attribute("qwen3guard.latency_ms", (time.perf_counter() - started) * 1000)
    sp.set_attribute("qwen3guard.batch_size", len(results))
