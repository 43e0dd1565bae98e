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

import json
from typing import Any, Literal

from ..backends.remote.guard_server import auth_headers, check_url
from ..backends.remote.guard_wire import error_from_wire
from ..core.deps import require
from ..core.errors import (
    BackendConnectionError,
    BackendProtocolError,
    ConfigurationError,
)
from ..core.messages import MessagesInput
from ..core.policy import Policy
from ..core.stream_rule import Debouncer
from .remote_session import REMOTE_BACKEND, RemoteStreamSession
from .session import AsyncStreamSession
from .stream import Qwen3StreamGuard

__all__ = ["REMOTE_BACKEND", "RemoteStreamGuard", "RemoteStreamSession"]


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
