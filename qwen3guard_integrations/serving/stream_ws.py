"""The Stream half of the guard server: sessions over one WebSocket.

Why a WebSocket: a Stream session is a long conversation of small frames in both directions
(a piece in, an update out, every few milliseconds) bound to one process that holds its KV
cache. A WebSocket is one TCP connection for the session's life, so the connection itself pins
the session to its replica (through any HTTP proxy that passes WebSockets, Ray Serve's
included), closing it frees the cache, and a dropped connection is seen at once by both ends.
HTTP/2 or gRPC streams would do the same with more machinery and fewer proxies that pass them.

The frames are described in `qwen3guard_integrations.guards.remote_wire`. Limits: the frame size
(``max_message_bytes``), feeds per second per connection (``pieces_per_second``), sessions per
connection and per process. A failed feed closes its session (its piece was not moderated).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from dataclasses import dataclass
from typing import Any

from ..backends.remote import tracing
from ..backends.remote.guard_wire import ErrorType, error_body, error_type_of, public_message
from ..core.errors import InvalidInputError
from ..core.policy import Policy
from ..guards.remote_wire import update_to_wire
from .app import ServerState
from .limits import TokenBucket

__all__ = ["stream_endpoint"]

_ids = itertools.count(1)


@dataclass
class _Live:
    session: Any
    policy: Policy
    trace: dict[str, str]
    sent: int = 0  # response ids whose bytes the client has


class _FrameError(Exception):
    def __init__(self, error_type: str, message: str, *, closed: bool) -> None:
        self.error_type = error_type
        self.message = message
        self.closed = closed
        super().__init__(message)


async def stream_endpoint(websocket: Any, state: ServerState) -> None:
    """Serve Stream sessions on one WebSocket until the client closes it."""
    await websocket.accept()
    if not state.authorized(websocket.headers):
        await _refuse(websocket, state)
        return
    sessions: dict[str, _Live] = {}
    bucket = TokenBucket(state.limits.pieces_per_second, state.limits.burst)
    try:
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                return
            raw = message.get("text")
            if raw is None:
                raw = (message.get("bytes") or b"").decode("utf-8", "replace")
            if len(raw.encode("utf-8")) > state.limits.max_message_bytes:
                await _send(
                    websocket,
                    _error(
                        state,
                        None,
                        None,
                        ErrorType.TOO_LARGE,
                        f"a frame is at most {state.limits.max_message_bytes} bytes; "
                        "the connection and its sessions are closed",
                        True,
                    ),
                )
                await websocket.close(code=1009)
                return
            reply = await _handle(raw, sessions, state, bucket)
            await _send(websocket, reply)
    except Exception as exc:  # the client went away mid-send: nothing to answer
        if type(exc).__name__ not in {"WebSocketDisconnect", "ClientDisconnected"}:
            raise
    finally:
        for live in sessions.values():
            _close_session(state, live)
        sessions.clear()


async def _refuse(websocket: Any, state: ServerState) -> None:
    """Answer the first frame (within 10 s) with ``Unauthorized``, then close with 4401: the
    client reads a typed error in its normal request / answer flow."""
    rid = None
    try:
        message = await asyncio.wait_for(websocket.receive(), timeout=10.0)
        frame = json.loads(message.get("text") or "{}")
        rid = frame.get("id") if isinstance(frame, dict) else None
    except Exception:  # no frame, not JSON, gone: the error goes out without an id
        pass
    try:
        error = _error(
            state, rid, None, ErrorType.UNAUTHORIZED, "missing or wrong bearer token", True
        )
        await _send(websocket, error)
        await websocket.close(code=4401)
    except Exception:  # the client already left
        pass


async def _handle(
    raw: str, sessions: dict[str, _Live], state: ServerState, bucket: TokenBucket
) -> dict[str, Any]:
    rid: Any = None
    sid: Any = None
    try:
        try:
            frame = json.loads(raw)
        except ValueError:
            raise _FrameError(
                ErrorType.INVALID_INPUT, "a frame must be a JSON object", closed=False
            ) from None
        if not isinstance(frame, dict):
            raise _FrameError(
                ErrorType.INVALID_INPUT, "a frame must be a JSON object", closed=False
            )
        rid, sid, op = frame.get("id"), frame.get("session"), frame.get("op")
        if op == "open":
            return await _open(frame, sessions, state)
        live = sessions.get(sid) if isinstance(sid, str) else None
        if live is None:
            raise _FrameError(
                ErrorType.SESSION_CLOSED, f"no open session {sid!r} on this connection", closed=True
            )
        if op == "close":
            _close_session(state, sessions.pop(sid))
            return {"op": "closed", "id": rid, "session": sid, "replica": state.replica}
        if op not in ("feed", "finish", "peek"):
            raise _FrameError(ErrorType.INVALID_INPUT, f"unknown op {op!r}", closed=False)
        if op == "feed" and not bucket.take():
            _close_session(state, sessions.pop(sid))
            raise _FrameError(
                ErrorType.RATE_LIMITED,
                f"over {state.limits.pieces_per_second:g} pieces per second on this connection; "
                "the session is closed",
                closed=True,
            )
        return await _step(op, frame, sid, sessions, state)
    except _FrameError as exc:
        return _error(state, rid, sid, exc.error_type, exc.message, exc.closed)


async def _open(
    frame: dict[str, Any], sessions: dict[str, _Live], state: ServerState
) -> dict[str, Any]:
    if state.stream is None:
        raise _FrameError(
            ErrorType.NOT_CONFIGURED, "this server serves no Stream model", closed=True
        )
    if len(sessions) >= state.limits.sessions_per_connection:
        raise _FrameError(
            ErrorType.TOO_MANY_SESSIONS,
            f"at most {state.limits.sessions_per_connection} sessions per connection",
            closed=True,
        )
    if state.live_sessions >= state.limits.max_sessions:
        raise _FrameError(
            ErrorType.BUSY, "the Stream engine is full; try another replica", closed=True
        )
    raw_trace = frame.get("trace")
    trace: dict[str, str] = dict(raw_trace) if isinstance(raw_trace, dict) else {}
    try:
        policy = Policy.model_validate(frame.get("policy") or {})
        debounce = frame.get("debounce", state.stream.debounce)
        think = frame.get("think", state.stream.think)
    except ValueError as exc:
        raise _FrameError(
            ErrorType.CONFIGURATION, f"bad session options: {exc}", closed=True
        ) from None
    state.live_sessions += 1  # counted before the prompt runs: the slot is taken
    started = time.perf_counter()
    with tracing.span(
        tracing.STREAM_SPAN, {"qwen3guard.op": "open"}, kind="server", parent=trace
    ) as sp:
        try:
            session = await state.call(
                "open",
                lambda: state.stream.session(
                    frame.get("messages"), policy=policy, debounce=debounce, think=think
                ),
            )
        except Exception as exc:
            state.live_sessions -= 1
            raise _FrameError(_option_error(exc), public_message(exc), closed=True) from None
        sid = f"s{next(_ids)}"
        live = _Live(session, policy, trace)
        sessions[sid] = live
        state.metrics.gauge_add("qwen3guard_live_sessions", 1)
        state.metrics.inc("qwen3guard_stream_sessions_total")
        verdict = session.prompt_verdict
        blocked = policy.blocks(verdict)
        state.metrics.record_verdict("stream", verdict, blocked=blocked)
        sp.set_attributes(tracing.verdict_attributes(verdict, blocked=blocked))
        sp.set_attribute("qwen3guard.latency_ms", (time.perf_counter() - started) * 1000)
    return {
        "op": "opened",
        "id": frame.get("id"),
        "session": sid,
        "replica": state.replica,
        "prompt_verdict": verdict.to_dict(),
        "prompt_ids": list(session.prompt_ids),
        "state": _state(live, state),
    }


async def _step(
    op: str, frame: dict[str, Any], sid: str, sessions: dict[str, _Live], state: ServerState
) -> dict[str, Any]:
    live = sessions[sid]
    session = live.session
    parent = frame.get("trace") if isinstance(frame.get("trace"), dict) else live.trace
    with tracing.span(
        tracing.STREAM_SPAN, {"qwen3guard.op": op}, kind="server", parent=parent
    ) as sp:
        started = time.perf_counter()
        try:
            if op == "feed":
                update = await state.call("feed", session.feed, frame.get("piece"))
            elif op == "finish":
                update = await state.call("finish", session.finish)
            else:
                update = await state.call("peek", session.peek)
        except Exception as exc:
            closed = bool(getattr(session, "closed", True))
            if closed or not isinstance(exc, InvalidInputError):
                _close_session(state, sessions.pop(sid))
                closed = True
            raise _FrameError(error_type_of(exc), public_message(exc), closed=closed) from None
        if op != "peek":
            state.metrics.inc("qwen3guard_stream_tokens_total", len(update.tokens))
            if update.tripped and update.verdict is not None:
                state.metrics.record_verdict("stream", update.verdict, blocked=update.blocked)
        sp.set_attribute("qwen3guard.latency_ms", (time.perf_counter() - started) * 1000)
        sp.set_attribute("qwen3guard.decision", update.decision.value)
        sp.set_attribute("qwen3guard.blocked", update.blocked)
        if update.verdict is not None:
            sp.set_attributes(tracing.verdict_attributes(update.verdict, blocked=update.blocked))
        elif update.tokens:
            sp.set_attribute("qwen3guard.token_index", update.start_index + len(update.tokens) - 1)
    return {
        "op": "update",
        "id": frame.get("id"),
        "session": sid,
        "replica": state.replica,
        "update": update_to_wire(update),
        "state": _state(live, state),
    }


def _option_error(exc: BaseException) -> str:
    """A plain ``ValueError`` from opening a session is a bad option (debounce, think)."""
    if isinstance(exc, ValueError) and not isinstance(exc, InvalidInputError):
        return ErrorType.CONFIGURATION
    return error_type_of(exc)


def _state(live: _Live, state: ServerState) -> dict[str, Any]:
    s = live.session
    ids = list(s.response_ids[live.sent :])
    live.sent += len(ids)
    tb = state.token_bytes
    return {
        "ids": ids,
        "bytes": [tb.bytes_of(i).hex() if tb is not None else "" for i in ids],
        "settled": s.settled_ids,
        "cached": s.cached_tokens,
        "decision": s.decision.value,
    }


def _close_session(state: ServerState, live: _Live) -> None:
    try:
        live.session.close()
    finally:
        state.live_sessions -= 1
        state.metrics.gauge_add("qwen3guard_live_sessions", -1)


def _error(
    state: ServerState, rid: Any, sid: Any, kind: str, message: str, closed: bool
) -> dict[str, Any]:
    state.metrics.inc("qwen3guard_errors_total", type=kind)
    return {"op": "error", "id": rid, "session": sid, "closed": closed, **error_body(kind, message)}


async def _send(websocket: Any, frame: dict[str, Any]) -> None:
    await websocket.send_text(json.dumps(frame))
