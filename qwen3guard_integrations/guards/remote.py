"""Stream sessions held by a guard server: ``Qwen3StreamGuard.from_server(url)``.

`RemoteStreamGuard` is a `Qwen3StreamGuard` whose sessions live on a guard server
(``qwen3guard serve``, or its Ray Serve deployment). Each `RemoteStreamSession` is a
`StreamSession` over its own WebSocket: the connection is the session's route, so every feed
reaches the replica that holds the session's KV cache for the session's whole life. The client
keeps a mirror of the session's state (settled ids, the response's token bytes) so hold-back,
callbacks and engines that read it work unchanged, with no tokenizer on the client.

Failures never leave a silent gap: a dropped connection, a restarted or killed server, a reply
from another replica or a malformed frame closes the session and raises a typed `BackendError`
(fail-closed, the default). Under ``Policy(on_error="fail_open")`` the session instead returns
an allowed update whose verdict is ``degraded=True`` and answers every later call with it,
without sending anything (the text after the failure is never reported as moderated).
"""

from __future__ import annotations

import itertools
import json
import threading
import time
from collections.abc import Sequence
from typing import Any, Literal

from ..backends.remote import tracing
from ..backends.remote.guard_server import auth_headers, check_url
from ..backends.remote.guard_wire import decode_bytes, error_from_wire, verdict_from_wire
from ..core.deps import require
from ..core.errors import (
    BackendConnectionError,
    BackendError,
    BackendProtocolError,
    BackendTimeoutError,
    ConfigurationError,
    InvalidInputError,
)
from ..core.labels import Level, Role
from ..core.messages import MessagesInput, prompt_messages
from ..core.policy import Policy
from ..core.stream_rule import Debouncer
from ..core.verdict import Verdict
from .remote_wire import update_from_wire
from .session import AsyncStreamSession, StreamSession, StreamUpdate
from .stream import Qwen3StreamGuard

__all__ = ["REMOTE_BACKEND", "RemoteStreamGuard", "RemoteStreamSession"]

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
                except InvalidInputError as exc:
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


class RemoteStreamGuard(Qwen3StreamGuard):
    """A `Qwen3StreamGuard` whose sessions are held by a guard server at ``url``.

    Build it with ``Qwen3StreamGuard.from_server(url)``. ``session`` / ``asession`` return
    `RemoteStreamSession` / `AsyncStreamSession` objects with the local API; the compatibility
    calls on raw ids (`stream_moderate_from_ids`) and `retokenizer` need a local model.
    """

    def __init__(
        self,
        url: str,
        *,
        token: str | None = None,
        headers: dict[str, str] | None = None,
        timeout: float = 30.0,
        policy: Policy | None = None,
        debounce: int = 2,
        think: Literal["moderate", "skip"] = "moderate",
        model_name: str | None = None,
        max_message_bytes: int = 1 << 20,
    ) -> None:
        Debouncer(debounce)
        if think not in ("moderate", "skip"):
            raise ConfigurationError(f"think must be 'moderate' or 'skip', got {think!r}")
        if not isinstance(timeout, (int, float)) or timeout <= 0:
            raise ConfigurationError(f"timeout must be a positive number, got {timeout!r}")
        self.url = check_url(url)
        self._ws_url = "ws" + self.url[len("http") :] + "/v1/stream"
        self._headers = auth_headers(token, headers)
        self.timeout = float(timeout)
        self.policy = policy or Policy.strict()
        self.debounce = debounce
        self.think = think
        self.model_name = model_name
        self.max_message_bytes = max_message_bytes
        self.loaded = None
        self.tokenizer = None
        self._ws_client = require("websockets.sync.client", "serve")

    @classmethod
    def connect(cls, url: str, **kwargs: Any) -> RemoteStreamGuard:
        """Build the guard and read the served Stream model's name from ``/v1/info``.

        `ConfigurationError` when the server serves no Stream model; a typed `BackendError`
        when it cannot be reached or refuses the token.
        """
        guard = cls(url, **kwargs)
        info = _server_info(guard.url, guard._headers, guard.timeout)
        if not info.get("stream_model"):
            raise ConfigurationError(f"the guard server at {guard.url} serves no Stream model")
        guard.model_name = str(info["stream_model"])
        return guard

    def _connect(self) -> Any:
        try:
            ws = self._ws_client.connect(
                self._ws_url,
                additional_headers=self._headers,
                open_timeout=self.timeout,
                max_size=self.max_message_bytes,
            )
            # the session owns the connection for its life (closed in close() or on failure)
            return ws.__enter__()
        except Exception as exc:
            status = getattr(getattr(exc, "response", None), "status_code", None)
            raise BackendConnectionError(
                f"cannot open a Stream session at {self._ws_url}: {type(exc).__name__}: {exc}",
                status=status,
                backend=REMOTE_BACKEND,
            ) from exc

    @property
    def model(self) -> Any:
        """None: the model runs on the server."""
        return None

    @property
    def device(self) -> Any:
        """None: the model runs on the server."""
        return None

    @property
    def dtype(self) -> Any:
        """None: the model runs on the server."""
        return None

    def session(
        self,
        messages: MessagesInput,
        *,
        policy: Policy | None = None,
        debounce: int | None = None,
        think: Literal["moderate", "skip"] | None = None,
    ) -> RemoteStreamSession:
        """Open a `RemoteStreamSession` for ``messages`` on the server."""
        return RemoteStreamSession(
            self,
            messages,
            policy=policy or self.policy,
            debounce=self.debounce if debounce is None else debounce,
            think=think or self.think,
        )

    def asession(
        self,
        messages: MessagesInput,
        *,
        policy: Policy | None = None,
        debounce: int | None = None,
        think: Literal["moderate", "skip"] | None = None,
    ) -> AsyncStreamSession:
        """An `AsyncStreamSession` over a remote session (its I/O runs in worker threads)."""
        return AsyncStreamSession(
            lambda: self.session(messages, policy=policy, debounce=debounce, think=think)
        )

    def retokenizer(self) -> Any:
        """Not available remotely: the server re-tokenizes text pieces."""
        raise ConfigurationError("a remote Stream guard has no local tokenizer; feed text pieces")

    def stream_moderate_from_ids(self, *args: Any, **kwargs: Any) -> Any:
        """Not available remotely: use `session`."""
        raise ConfigurationError(
            "stream_moderate_from_ids needs a local Stream model; use session() with a server"
        )

    def close_stream(self, stream_state: Any) -> None:
        """Not available remotely: use `session`."""
        raise ConfigurationError("close_stream needs a local Stream model")

    def __repr__(self) -> str:
        return f"RemoteStreamGuard(url={self.url!r}, model={self.model_name!r})"


def _server_info(url: str, headers: dict[str, str], timeout: float) -> dict[str, Any]:
    from ..backends.remote.http import get

    httpx = require("httpx", "serve")
    with httpx.Client(headers=headers, timeout=timeout) as client:
        result = get(client, f"{url}/v1/info", backend=REMOTE_BACKEND, endpoint=url)
    try:
        data = json.loads(result.body)
    except ValueError:
        data = None
    if result.status != 200:
        raise error_from_wire(data, status=result.status, endpoint=url, backend=REMOTE_BACKEND)
    if not isinstance(data, dict):
        raise BackendProtocolError(f"{url}/v1/info is not a JSON object", backend=REMOTE_BACKEND)
    return data
