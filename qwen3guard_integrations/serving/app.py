"""The guard server: one ASGI app (Starlette) in front of a Gen guard and a Stream guard.

Routes:

* ``GET /health``: liveness (the process answers); ``GET /ready``: models loaded and room for
  another Stream session (503 with a typed error otherwise). Both are open to probes.
* ``GET /metrics``: Prometheus text (`Metrics`).
* ``GET /v1/info``: the served models, this replica's id and the limits.
* ``POST /v1/check`` ``{"messages": [...]}`` -> ``{"verdict": Verdict.to_dict}`` (the mode
  follows the last message); ``POST /v1/check_batch`` ``{"conversations": [[...], ...]}`` ->
  ``{"results": [{"verdict": ...} | {"error": ...}, ...]}``.
* ``WS /v1/stream``: Stream sessions (`stream_endpoint`; the frames are in
  `qwen3guard_integrations.guards.remote_wire`).

With ``auth_token`` every route but the probes needs ``Authorization: Bearer <token>``. Every
error is ``{"error": {"type", "message"}}`` with the status of `ERROR_STATUS`.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import os
import time
import uuid
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from ..backends.remote import tracing
from ..backends.remote.guard_wire import (
    ErrorType,
    error_body,
    error_status,
    error_type_of,
    public_message,
)
from ..core.deps import require
from ..core.verdict import Verdict
from .limits import ServerLimits
from .metrics import Metrics

__all__ = ["ServerState", "create_app"]

T = TypeVar("T")


class ServerState:
    """What every handler of one app shares: the guards, limits, metrics and the model queue."""

    def __init__(
        self,
        gen: Any = None,
        stream: Any = None,
        *,
        auth_token: str | None = None,
        limits: ServerLimits | None = None,
        replica: str | None = None,
    ) -> None:
        from ..core.errors import ConfigurationError

        if gen is None and stream is None:
            raise ConfigurationError("the guard server needs a Gen guard, a Stream guard or both")
        if auth_token is not None and (not isinstance(auth_token, str) or not auth_token):
            raise ConfigurationError("auth_token must be a non-empty string")
        self.gen = gen
        self.stream = stream
        self.limits = limits or ServerLimits()
        self._token = auth_token
        self.replica = replica or f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.metrics = Metrics()
        self.live_sessions = 0
        self._sem: asyncio.Semaphore | None = None
        self.token_bytes: Any = None
        if stream is not None and getattr(stream, "tokenizer", None) is not None:
            from .tokens import TokenBytes

            self.token_bytes = TokenBytes(stream.tokenizer)

    @property
    def gen_model(self) -> str | None:
        """The served Gen model's id."""
        return None if self.gen is None else str(self.gen.backend.model_id)

    @property
    def stream_model(self) -> str | None:
        """The served Stream model's name."""
        if self.stream is None:
            return None
        loaded = getattr(self.stream, "loaded", None)
        return str(getattr(loaded, "name", None) or getattr(self.stream, "model_name", "stream"))

    def authorized(self, headers: Mapping[str, str]) -> bool:
        """Whether the request carries the bearer token (always, without one)."""
        if self._token is None:
            return True
        got = headers.get("authorization", "")
        return hmac.compare_digest(got.encode(), f"Bearer {self._token}".encode())

    async def call(self, op: str, fn: Callable[..., T], *args: Any) -> T:
        """Run one model call in a worker thread, at most ``max_concurrency`` at once."""
        if self._sem is None:
            self._sem = asyncio.Semaphore(self.limits.max_concurrency)
        self.metrics.gauge_add("qwen3guard_queue_depth", 1)
        try:
            async with self._sem:
                started = time.perf_counter()
                result = await asyncio.to_thread(fn, *args)
                hist = "qwen3guard_check_latency_seconds" if op == "check" else None
                if hist is not None:
                    self.metrics.observe(hist, time.perf_counter() - started)
                else:
                    self.metrics.observe(
                        "qwen3guard_step_latency_seconds", time.perf_counter() - started, op=op
                    )
                return result
        finally:
            self.metrics.gauge_add("qwen3guard_queue_depth", -1)

    def error(self, error_type: str, message: str) -> dict[str, Any]:
        """An error body, counted in ``qwen3guard_errors_total``."""
        self.metrics.inc("qwen3guard_errors_total", type=error_type)
        return error_body(error_type, message)


def create_app(
    gen: Any = None,
    stream: Any = None,
    *,
    auth_token: str | None = None,
    limits: ServerLimits | None = None,
    replica: str | None = None,
) -> Any:
    """The Starlette app serving ``gen`` (a `Qwen3Guard`) and ``stream`` (a `Qwen3StreamGuard`).

    Either may be None (that half answers ``NotConfigured``). ``app.state.guard`` holds the
    `ServerState`.
    """
    require("starlette", "serve")
    from starlette.applications import Starlette
    from starlette.exceptions import HTTPException
    from starlette.requests import Request
    from starlette.responses import JSONResponse, PlainTextResponse, Response
    from starlette.routing import Route, WebSocketRoute

    from .stream_ws import stream_endpoint

    state = ServerState(gen, stream, auth_token=auth_token, limits=limits, replica=replica)

    def fail(error_type: str, message: str) -> Response:
        return JSONResponse(state.error(error_type, message), status_code=error_status(error_type))

    def denied(request: Request) -> Response | None:
        if state.authorized(request.headers):
            return None
        return fail(ErrorType.UNAUTHORIZED, "missing or wrong bearer token")

    async def health(request: Request) -> Response:
        return JSONResponse({"status": "ok", "replica": state.replica})

    async def ready(request: Request) -> Response:
        if state.live_sessions >= state.limits.max_sessions:
            return fail(ErrorType.BUSY, "the Stream engine is full")
        return JSONResponse(
            {
                "ready": True,
                "replica": state.replica,
                "gen_model": state.gen_model,
                "stream_model": state.stream_model,
                "live_sessions": state.live_sessions,
                "max_sessions": state.limits.max_sessions,
            }
        )

    async def metrics(request: Request) -> Response:
        return denied(request) or PlainTextResponse(
            state.metrics.render(), media_type="text/plain; version=0.0.4"
        )

    async def info(request: Request) -> Response:
        return denied(request) or JSONResponse(
            {
                "gen_model": state.gen_model,
                "stream_model": state.stream_model,
                "replica": state.replica,
                "limits": {
                    k: getattr(state.limits, k)
                    for k in ("max_message_bytes", "pieces_per_second", "sessions_per_connection")
                },
            }
        )

    async def read_json(request: Request) -> Any:
        size = request.headers.get("content-length")
        if size is not None and size.isdigit() and int(size) > state.limits.max_message_bytes:
            raise _Refused(
                ErrorType.TOO_LARGE, f"the body is over {state.limits.max_message_bytes} bytes"
            )
        body = await request.body()
        if len(body) > state.limits.max_message_bytes:
            raise _Refused(
                ErrorType.TOO_LARGE, f"the body is over {state.limits.max_message_bytes} bytes"
            )
        try:
            return json.loads(body)
        except (ValueError, UnicodeDecodeError):
            raise _Refused(ErrorType.INVALID_INPUT, "the body is not JSON") from None

    async def check_one(convo: Any, parent: Mapping[str, str]) -> Verdict:
        with tracing.span(tracing.CHECK_SPAN, kind="server", parent=parent) as sp:
            verdict: Verdict = await state.call("check", state.gen.check, convo)
            blocked = state.gen.blocks(verdict)
            state.metrics.record_verdict("gen", verdict, blocked=blocked)
            sp.set_attributes(tracing.verdict_attributes(verdict, blocked=blocked))
            return verdict

    async def gen_route(request: Request, batch: bool) -> Response:
        refused = denied(request)
        if refused is not None:
            return refused
        if state.gen is None:
            return fail(ErrorType.NOT_CONFIGURED, "this server serves no Gen model")
        try:
            data = await read_json(request)
            key = "conversations" if batch else "messages"
            if not isinstance(data, dict) or key not in data:
                raise _Refused(ErrorType.INVALID_INPUT, f"the body needs a {key!r} field")
            convos = data[key] if batch else [data[key]]
            if batch and (not isinstance(convos, list) or not convos):
                raise _Refused(ErrorType.INVALID_INPUT, "conversations must be a non-empty list")
            if len(convos) > state.limits.max_batch:
                raise _Refused(
                    ErrorType.TOO_LARGE, f"a batch holds at most {state.limits.max_batch}"
                )
        except _Refused as exc:
            return fail(exc.error_type, exc.message)
        parent = dict(request.headers)
        results = await asyncio.gather(
            *(check_one(c, parent) for c in convos), return_exceptions=True
        )
        out: list[dict[str, Any]] = []
        for r in results:
            if isinstance(r, Verdict):
                out.append({"verdict": r.to_dict()})
            else:
                out.append(state.error(error_type_of(r), public_message(r)))
        if batch:
            return JSONResponse({"results": out})
        if "error" in out[0]:
            return JSONResponse(out[0], status_code=error_status(out[0]["error"]["type"]))
        return JSONResponse(out[0])

    async def check(request: Request) -> Response:
        return await gen_route(request, batch=False)

    async def check_batch(request: Request) -> Response:
        return await gen_route(request, batch=True)

    async def http_error(request: Request, exc: Exception) -> Response:
        status = getattr(exc, "status_code", 500)
        kind = {404: ErrorType.NOT_FOUND, 405: ErrorType.NOT_FOUND}.get(status, ErrorType.INTERNAL)
        return JSONResponse(state.error(kind, str(getattr(exc, "detail", ""))), status_code=status)

    async def ws(websocket: Any) -> None:
        await stream_endpoint(websocket, state)

    app = Starlette(
        routes=[
            Route("/health", health),
            Route("/ready", ready),
            Route("/metrics", metrics),
            Route("/v1/info", info),
            Route("/v1/check", check, methods=["POST"]),
            Route("/v1/check_batch", check_batch, methods=["POST"]),
            WebSocketRoute("/v1/stream", ws),
        ],
        exception_handlers={HTTPException: http_error},
    )
    app.state.guard = state
    return app


class _Refused(Exception):
    def __init__(self, error_type: str, message: str) -> None:
        self.error_type = error_type
        self.message = message
        super().__init__(message)
