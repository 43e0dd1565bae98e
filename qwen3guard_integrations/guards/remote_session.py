"""`RemoteStreamSession`: a `StreamSession` held by a guard server, over its own WebSocket.

See `qwen3guard_integrations.guards.remote` for the guard that opens them, and
`qwen3guard_integrations.guards.remote_wire` for the frames.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import threading
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Literal

from ..backends.remote import tracing
from ..backends.remote.guard_wire import decode_bytes, error_from_wire, verdict_from_wire
from ..core.errors import (
    BackendConnectionError,
    BackendError,
    BackendProtocolError,
    BackendTimeoutError,
    ConfigurationError,
    InvalidInputError,
    SessionClosedError,
)
from ..core.labels import Level, Role
from ..core.messages import MessagesInput, prompt_messages
from ..core.policy import Policy
from ..core.stream_rule import Debouncer
from ..core.verdict import Verdict
from .remote_wire import update_from_wire
from .session import StreamSession, StreamUpdate

if TYPE_CHECKING:
    from .remote import RemoteStreamGuard

__all__ = ["REMOTE_BACKEND", "RemoteStreamSession"]

REMOTE_BACKEND = "guard-server-stream"


class RemoteStreamSession(StreamSession):
    """A `StreamSession` held by a guard server (see the module docstring)."""

    def __init__(
        self,
        guard: RemoteStreamGuard,
        messages: MessagesInput,
        *,
        policy: Policy,
        debounce: int,
        think: Literal["moderate", "skip"],
    ) -> None:
        msgs = prompt_messages(messages)
        Debouncer(debounce)
        if think not in ("moderate", "skip"):
            raise ConfigurationError(f"think must be 'moderate' or 'skip', got {think!r}")
        self.policy = policy
        self.model_name = guard.model_name
        self.endpoint = guard.url
        self._timeout = guard.timeout
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self._debounce_n = debounce
        self._bytes: list[bytes] = []
        self._ids_seen: list[int] = []
        self._settled = 0
        self._cached = 0
        self._decision = Level.SAFE
        self._verdict: Verdict | None = None
        self._degraded: StreamUpdate | None = None
        self._closed = False
        self._ws: Any = None
        self.session_id: str | None = None
        self.replica: str | None = None
        started = time.perf_counter()
        with tracing.span(tracing.STREAM_SPAN, {"qwen3guard.op": "open"}, kind="client") as sp:
            try:
                self._ws = guard._connect()
                reply = self._request(
                    {
                        "op": "open",
                        "messages": [m.as_dict() for m in msgs],
                        "debounce": debounce,
                        "think": think,
                        "policy": policy.model_dump(mode="json"),
                    },
                    expect="opened",
                )
                self.session_id = str(reply["session"])
                self.replica = str(reply["replica"])
                self.prompt_ids: tuple[int, ...] = tuple(int(i) for i in reply["prompt_ids"])
                verdict = verdict_from_wire(reply["prompt_verdict"], endpoint=self.endpoint)
                self._mirror(reply)
            except BackendError as exc:
                self._drop()
                if not policy.fail_open:
                    raise
                verdict = policy.degraded_verdict(
                    exc,
                    role=Role.PROMPT,
                    model=self.model_name,
                    backend=REMOTE_BACKEND,
                    endpoint=self.endpoint,
                    latency_ms=(time.perf_counter() - started) * 1000,
                )
                self.prompt_ids = ()
                self._degrade(exc)
            except BaseException:
                self._drop()
                raise
            self.prompt_verdict = verdict
            sp.set_attributes(tracing.verdict_attributes(verdict, blocked=policy.blocks(verdict)))

    # -- state (the mirror) ---------------------------------------------------------------------
    @property
    def closed(self) -> bool:
        """True after `close`, or after a failure closed the session."""
        return self._closed

    @property
    def cache(self) -> Any:
        """Always None: the KV cache lives on the server."""
        return None

    @property
    def cached_tokens(self) -> int:
        """How many positions the server's KV cache holds (as of the last answer)."""
        return 0 if self._closed else self._cached

    @property
    def verdict(self) -> Verdict | None:
        """The response verdict of the most severe trip so far (the degraded one after a
        failure under fail-open)."""
        return self._verdict

    @property
    def decision(self) -> Level:
        """The debounced decision so far."""
        return self._decision

    @property
    def blocked(self) -> bool:
        """Whether this session's policy blocks the response so far."""
        return self._verdict is not None and self.policy.blocks(self._verdict)

    @property
    def degraded(self) -> bool:
        """True when a failure was let through by a fail-open policy."""
        return self._degraded is not None

    @property
    def response_ids(self) -> tuple[int, ...]:
        """Every response token id the server received so far."""
        return tuple(self._ids_seen)

    @property
    def debounce(self) -> int:
        """How many consecutive flagged tokens trip the decision."""
        return self._debounce_n

    @property
    def settled_ids(self) -> int:
        """How many leading response ids can no longer be part of a future trip."""
        return self._settled

    def decode_response(self, start: int = 0, stop: int | None = None) -> str:
        """The text of response ids ``start:stop``, from the token bytes the server sent."""
        return decode_bytes(self._bytes[start:stop])

    # -- calls ----------------------------------------------------------------------------------
    def feed(self, piece: str | int | Sequence[int]) -> StreamUpdate:
        """Moderate the next piece on the server (see `StreamSession.feed`)."""
        if isinstance(piece, (bytes, bytearray)):
            raise InvalidInputError("pieces must be str or token ids, not bytes")
        if isinstance(piece, bool) or not isinstance(piece, (str, int, Sequence)):
            raise InvalidInputError(
                f"pieces must be str, an int or a list of ints, not {type(piece).__name__}"
            )
        if not isinstance(piece, (str, int)):
            piece = list(piece)
        return self._call({"op": "feed", "piece": piece})

    def finish(self) -> StreamUpdate:
        """End of the response (see `StreamSession.finish`)."""
        return self._call({"op": "finish"})

    def peek(self) -> StreamUpdate:
        """Moderate the held-back tail without committing it (see `StreamSession.peek`)."""
        return self._call({"op": "peek"})

    def response_source(self, start: int = 0, stop: int | None = None) -> str | None:
        """None: the server holds the fed text; `decode_response` gives the exact bytes the
        server moderated instead."""
        return None

    async def afeed(self, piece: str | int | Sequence[int]) -> StreamUpdate:
        """`feed` with the round trip in a worker thread (the WebSocket client is sync)."""
        return await asyncio.to_thread(self.feed, piece)

    async def afinish(self) -> StreamUpdate:
        """`finish` with the round trip in a worker thread."""
        return await asyncio.to_thread(self.finish)

    def close(self) -> None:
        """Close the session on the server and the connection. Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            if self._ws is not None and self._degraded is None:
                try:
                    self._request({"op": "close"}, expect="closed")
                except Exception:  # closing: the server frees the session with the connection
                    pass
            self._drop()

    def __enter__(self) -> RemoteStreamSession:
        return self

    def _check_open(self) -> None:
        if self._closed:
            raise SessionClosedError(
                "this remote stream session is closed (or a failure closed it: see the first error)"
            )

    # -- wire -----------------------------------------------------------------------------------
    def _call(self, frame: dict[str, Any]) -> StreamUpdate:
        with self._lock:
            if self._degraded is not None:
                return self._degraded
            self._check_open()
            with tracing.span(
                tracing.STREAM_SPAN, {"qwen3guard.op": frame["op"]}, kind="client"
            ) as sp:
                try:
                    reply = self._request(frame, expect="update")
                    update = update_from_wire(reply["update"])
                    self._mirror(reply)
                except (InvalidInputError, SessionClosedError) as exc:
                    if getattr(exc, "session_closed", False):
                        self._closed = True
                        self._drop()
                    raise
                except (KeyError, TypeError, ValueError) as exc:
                    return self._fail(
                        BackendProtocolError(
                            f"guard server {self.endpoint} sent a malformed update: {exc!r}",
                            backend=REMOTE_BACKEND,
                        )
                    )
                except BackendError as exc:
                    return self._fail(exc)
                blocked = update.verdict is not None and self.policy.blocks(update.verdict)
                if update.verdict is not None:
                    self._verdict = update.verdict
                    sp.set_attributes(tracing.verdict_attributes(update.verdict, blocked=blocked))
                return StreamUpdate(
                    update.tokens,
                    update.start_index,
                    update.decision,
                    update.verdict,
                    blocked,
                    update.tripped,
                )

    def _fail(self, exc: BackendError) -> StreamUpdate:
        """A failure mid-session: closed (raise) or, under fail-open, degraded from now on."""
        self._drop()
        if not self.policy.fail_open:
            self._closed = True
            raise exc
        return self._degrade(exc)

    def _degrade(self, exc: BaseException) -> StreamUpdate:
        verdict = self.policy.degraded_verdict(
            exc,
            role=Role.RESPONSE,
            model=self.model_name,
            backend=REMOTE_BACKEND,
            endpoint=self.endpoint,
        )
        self._verdict = verdict
        self._degraded = StreamUpdate(
            (), len(self._ids_seen), self._decision, verdict, False, False
        )
        return self._degraded

    def _drop(self) -> None:
        ws, self._ws = self._ws, None
        if ws is not None:
            try:
                ws.close()
            except Exception:  # already broken: nothing to release
                pass

    def _request(self, frame: dict[str, Any], *, expect: str) -> dict[str, Any]:
        """Send one frame and read its answer; every failure is a typed error."""
        if self._ws is None:
            raise BackendConnectionError(
                f"the connection to {self.endpoint} is gone", backend=REMOTE_BACKEND
            )
        rid = next(self._ids)
        frame = {**frame, "id": rid, "trace": tracing.inject()}
        if self.session_id is not None:
            frame["session"] = self.session_id
        try:
            self._ws.send(json.dumps(frame))
            raw = self._ws.recv(timeout=self._timeout)
        except TimeoutError as exc:
            raise BackendTimeoutError(
                f"guard server {self.endpoint} did not answer in time", backend=REMOTE_BACKEND
            ) from exc
        except Exception as exc:  # ConnectionClosed, OSError: the server or the network went away
            raise BackendConnectionError(
                f"lost the connection to guard server {self.endpoint} mid-session "
                f"({type(exc).__name__}: {exc}); the session is closed",
                backend=REMOTE_BACKEND,
            ) from exc
        try:
            reply = json.loads(raw)
        except ValueError:
            raise BackendProtocolError(
                f"guard server {self.endpoint} sent a frame that is not JSON",
                backend=REMOTE_BACKEND,
            ) from None
        if not isinstance(reply, dict):
            raise BackendProtocolError("the guard server sent a frame that is not an object")
        if reply.get("op") == "error":
            err = error_from_wire(
                reply, status=None, endpoint=self.endpoint, backend=REMOTE_BACKEND
            )
            err.session_closed = bool(reply.get("closed", True))  # type: ignore[attr-defined]
            raise err
        if reply.get("op") != expect or reply.get("id") != rid:
            raise BackendProtocolError(
                f"guard server {self.endpoint} answered {reply.get('op')!r} #{reply.get('id')} "
                f"to {frame['op']!r} #{rid}",
                backend=REMOTE_BACKEND,
            )
        if self.replica is not None and reply.get("replica", self.replica) != self.replica:
            raise BackendProtocolError(
                f"an answer came from replica {reply.get('replica')!r}, not {self.replica!r} that "
                "holds this session",
                backend=REMOTE_BACKEND,
            )
        return reply

    def _mirror(self, reply: dict[str, Any]) -> None:
        state = reply["state"]
        for hx in state["bytes"]:
            self._bytes.append(bytes.fromhex(hx))
        self._ids_seen.extend(int(i) for i in state["ids"])
        self._settled = int(state["settled"])
        self._cached = int(state["cached"])
        self._decision = Level(state["decision"])
