"""The engine shared by the serving backends (TGI, OpenAI-compatible).

A `RemoteGenBackend` encodes conversations on the client with the guard's tokenizer
(`GenPromptEncoder`: the same control-token safety and windowing as the local
backend), sends one request per window, concurrently and bounded, retries 429 / 503 answers with
backoff, and assembles the verdicts with `verdict_from_answers`. Subclasses
write only the request itself, once sync and once async.

Every failure ends as a typed error for its item: `BackendConnectionError`,
`BackendTimeoutError`, `BackendHTTPError` (status, the server's ``error`` /
``error_type``), `BackendProtocolError` (a 2xx answer that is not the protocol) or
`VerdictParseError` (an answer that is not a verdict). The guard turns them into a raised
error (fail-closed) or a ``degraded`` verdict (fail-open).

``timeout`` is a deadline for each window's whole exchange, from the moment it gets its
concurrency slot: its requests, its retries and their waits, and every byte of every answer
(`deadline_scope`). A single check (one window) is therefore bounded by ``timeout`` once it is
sent; waiting behind other checks for a slot is bounded by those checks' own deadlines. Async clients
live one per event loop and are closed when that loop shuts down (``asyncio.run`` ends), so a
program that calls ``asyncio.run(guard.acheck_prompt(...))`` in a loop keeps its sockets flat.
"""

from __future__ import annotations

import asyncio
import functools
import threading
import time
import weakref
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import CancelledError, ThreadPoolExecutor
from typing import Any, TypeVar

from ...core.errors import (
    BackendHTTPError,
    BackendTimeoutError,
    ConfigurationError,
    InvalidInputError,
    Qwen3GuardError,
    SessionClosedError,
)
from ...core.gen_answer import GenAnswer, verdict_from_answers
from ...core.labels import Role
from ...core.messages import Message
from ...core.verdict import Verdict
from ..gen.prompt import LEVEL_WORDS, GenPrompt, GenPromptEncoder
from .answers import Ask, WindowPlan
from .health import HealthRoutes
from .http import deadline_left, deadline_scope
from .protocol import RETRY_STATUSES, LabelTokens, RetryPolicy
from .render import PromptRenderer

__all__ = ["RemoteGenBackend"]

T = TypeVar("T")


class RemoteGenBackend(HealthRoutes):
    """Base of the serving backends; see the module docstring.

    Subclasses set ``name``, an ``httpx.Client`` as ``_http`` (and ``"http"``, an
    ``httpx.AsyncClient``, in their per-loop state), and implement `_send` and
    `_asend` (one request for one window, raising `BackendHTTPError` with
    ``retry_headers`` for error statuses) and the two health hooks.
    """

    name = "remote"
    endpoint: str | None
    _http: Any  # an httpx.Client, set by the subclass
    #: the guard calls this backend directly instead of micro-batching (it does its own fan-out)
    coalesce = False

    def __init__(
        self,
        tokenizer: Any,
        *,
        model_id: str,
        endpoint: str,
        max_new_tokens: int = 64,
        max_input_tokens: int = 8192,
        window_overlap: int = 64,
        max_concurrency: int = 16,
        retry: RetryPolicy | None = None,
        timeout: float = 30.0,
        forced_answers: bool = True,
    ) -> None:
        if max_concurrency < 1:
            raise ConfigurationError("max_concurrency must be at least 1")
        if timeout <= 0:
            raise ConfigurationError("timeout must be positive")
        self.tokenizer = tokenizer
        self.model_id = model_id
        self.endpoint = endpoint
        self.max_new_tokens = max_new_tokens
        self.max_concurrency = max_concurrency
        self.retry = retry or RetryPolicy()
        self.timeout = timeout
        self.encoder = GenPromptEncoder(
            tokenizer, max_input_tokens=max_input_tokens, window_overlap=window_overlap
        )
        self.renderer = PromptRenderer(self.encoder)
        first = self.encoder.level_first_token
        self.labels = LabelTokens(
            ids=dict(first),
            texts={lv: str(tokenizer.decode([first[lv]])) for lv in LEVEL_WORDS},
        )
        #: the requests of one window (fast mode: forced-prefix steps of one token each)
        self.plan = WindowPlan(
            self.encoder, self.labels, max_new_tokens=max_new_tokens, forced=forced_answers
        )
        self._pool: ThreadPoolExecutor | None = None
        self._pool_lock = threading.Lock()
        self._loop_state: weakref.WeakKeyDictionary[Any, dict[str, Any]] = (
            weakref.WeakKeyDictionary()
        )

    @property
    def _where(self) -> dict[str, str]:
        """Who answered, for error texts: the backend's name and its redacted endpoint."""
        return {"backend": self.name, "endpoint": self.endpoint or ""}

    # --- to implement ----------------------------------------------------------------------------

    def _send(self, ask: Ask) -> GenAnswer:
        """One request: ``ask.ids`` as the prompt (``ask.head``: the answer text they already
        hold; ``ask.max_new_tokens`` None: the backend's own)."""
        raise NotImplementedError

    async def _asend(self, ask: Ask, state: dict[str, Any]) -> GenAnswer:
        """Async twin of `_send`."""
        raise NotImplementedError

    def _new_loop_state(self) -> dict[str, Any]:
        """Per-event-loop async resources (clients); the semaphore is added by the engine."""
        return {}

    async def _close_loop_state(self, state: dict[str, Any]) -> None:
        return None

    # --- the protocol --------------------------------------------------------------------------

    def check_batch(
        self, conversations: Sequence[Sequence[Message]], *, fast: bool = True
    ) -> list[Verdict | Exception]:
        """One verdict (or that item's typed error) per conversation; windows run concurrently."""
        start = time.perf_counter()
        prompts, flat = self._encode_all(conversations)
        results: list[GenAnswer | Exception] = []
        if flat:
            pool = self._executor()
            futures = [pool.submit(self._window, w, _role(prompts, i), fast) for i, w in flat]
            results = [_outcome(f) for f in futures]
        return self._assemble(prompts, flat, results, start)

    async def acheck_batch(
        self, conversations: Sequence[Sequence[Message]], *, fast: bool = True
    ) -> list[Verdict | Exception]:
        """Async twin of `check_batch` (native async I/O, bounded concurrency)."""
        start = time.perf_counter()
        prompts, flat = self._encode_all(conversations)
        state = await self._aloop_state()
        sem: asyncio.Semaphore = state["semaphore"]

        async def one(window: Sequence[int], role: Role) -> GenAnswer:
            async with sem:  # from here on: the requests, retries and every read in `timeout`
                try:
                    with deadline_scope(self.timeout):
                        return await asyncio.wait_for(
                            self._awindow(window, role, fast, state), self.timeout
                        )
                except asyncio.TimeoutError as exc:
                    if isinstance(exc, BackendTimeoutError):
                        raise
                    raise self._timed_out() from exc

        gathered = await asyncio.gather(
            *(one(w, _role(prompts, i)) for i, w in flat), return_exceptions=True
        )
        results: list[GenAnswer | Exception] = []
        for r in gathered:
            if isinstance(r, BaseException) and not isinstance(r, Exception):
                raise r  # cancellation and friends are not an item's result
            results.append(r)
        return self._assemble(prompts, flat, results, start)

    def _timed_out(self) -> BackendTimeoutError:
        return BackendTimeoutError(
            f"{self.name} endpoint {self.endpoint} did not answer within the check's timeout "
            f"({self.timeout:g} s, retries included)",
            backend=self.name,
        )

    def close(self) -> None:
        """Stop the worker threads of the sync path."""
        with self._pool_lock:
            if self._pool is not None:
                self._pool.shutdown(wait=False, cancel_futures=True)
                self._pool = None

    async def aclose(self) -> None:
        """Close the async clients of the running event loop (and the sync workers)."""
        loop = asyncio.get_running_loop()
        state = self._loop_state.get(loop)
        if state is not None:
            await self._release_loop(loop, state)
        self.close()

    # --- engine --------------------------------------------------------------------------------

    def _encode_all(
        self, conversations: Sequence[Sequence[Message]]
    ) -> tuple[list[GenPrompt | Exception], list[tuple[int, tuple[int, ...]]]]:
        prompts: list[GenPrompt | Exception] = []
        for convo in conversations:
            try:
                prompts.append(self.encoder.encode(convo))
            except InvalidInputError as exc:
                prompts.append(exc)
        flat = [
            (i, w) for i, p in enumerate(prompts) if isinstance(p, GenPrompt) for w in p.windows
        ]
        return prompts, flat

    def _assemble(
        self,
        prompts: list[GenPrompt | Exception],
        flat: list[tuple[int, tuple[int, ...]]],
        results: list[GenAnswer | Exception],
        start: float,
    ) -> list[Verdict | Exception]:
        per_item: dict[int, list[GenAnswer]] = {}
        failed: dict[int, Exception] = {}
        for (i, _), res in zip(flat, results):
            if isinstance(res, Exception):
                failed.setdefault(i, res)  # one failed window fails the item: never half-checked
            else:
                per_item.setdefault(i, []).append(res)
        latency = (time.perf_counter() - start) * 1000
        out: list[Verdict | Exception] = []
        for i, p in enumerate(prompts):
            if isinstance(p, Exception):
                out.append(p)
            elif i in failed:
                out.append(failed[i])
            else:
                try:
                    out.append(
                        verdict_from_answers(
                            per_item.get(i, []),
                            role=p.role,
                            model=self.model_id,
                            backend=self.name,
                            endpoint=self.endpoint,
                            latency_ms=latency,
                        )
                    )
                except Qwen3GuardError as exc:
                    out.append(exc)
        return out

    def _window(self, window: Sequence[int], role: Role, fast: bool) -> GenAnswer:
        """The answer for one window (`WindowPlan`), all of it within ``timeout`` (it runs on
        a worker: its slot)."""
        with deadline_scope(self.timeout):
            steps = self.plan.steps(window, role, fast=fast)
            ask = next(steps)
            while True:
                reply = self._with_retries(self._send, ask)
                try:
                    ask = steps.send(reply)
                except StopIteration as done:
                    answer: GenAnswer = done.value
                    return answer

    async def _awindow(
        self, window: Sequence[int], role: Role, fast: bool, state: dict[str, Any]
    ) -> GenAnswer:
        """Async twin of `_window`."""
        steps = self.plan.steps(window, role, fast=fast)
        ask = next(steps)
        while True:
            reply = await self._awith_retries(functools.partial(self._asend, ask, state))
            try:
                ask = steps.send(reply)
            except StopIteration as done:
                answer: GenAnswer = done.value
                return answer

    def _executor(self) -> ThreadPoolExecutor:
        with self._pool_lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(
                    self.max_concurrency, thread_name_prefix=f"qwen3guard-{self.name}"
                )
            return self._pool

    def _state_for_loop(self) -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        state = self._loop_state.get(loop)
        if state is None:
            state = self._new_loop_state()
            state["semaphore"] = asyncio.Semaphore(self.max_concurrency)
            self._loop_state[loop] = state
        return state

    async def _aloop_state(self) -> dict[str, Any]:
        """`_state_for_loop`, with the loop's clients tied to the loop's life: an async
        generator started in the loop is finalised by ``loop.shutdown_asyncgens()`` (which
        ``asyncio.run`` and ``asyncio.Runner`` call before closing the loop), and closes them."""
        state = self._state_for_loop()
        if "keeper" not in state:
            keeper = _keep(self, asyncio.get_running_loop(), state)
            state["keeper"] = keeper
            await keeper.__anext__()
        return state

    async def _release_loop(self, loop: Any, state: dict[str, Any]) -> None:
        if loop is not None and self._loop_state.get(loop) is state:
            del self._loop_state[loop]
        if not state.get("closed"):
            state["closed"] = True
            await self._close_loop_state(state)

    def _retry_delay(self, exc: BackendHTTPError, attempt: int) -> float:
        """How long to wait before retrying ``exc``; re-raises it when it is not retried or when
        the wait would end past the check's deadline."""
        if exc.status not in RETRY_STATUSES or attempt >= self.retry.max_retries:
            raise exc
        delay = self.retry.delay(attempt, getattr(exc, "retry_headers", None))
        left = deadline_left(backend=self.name, endpoint=self.endpoint or "")
        if left is not None and delay >= left:
            raise exc
        return delay

    def _with_retries(self, send: Callable[..., T], *args: Any) -> T:
        for attempt in range(self.retry.max_retries + 1):
            try:
                return send(*args)
            except BackendHTTPError as exc:
                time.sleep(self._retry_delay(exc, attempt))
        raise AssertionError("unreachable")  # pragma: no cover

    async def _awith_retries(self, send: Callable[[], Awaitable[T]]) -> T:
        for attempt in range(self.retry.max_retries + 1):
            try:
                return await send()
            except BackendHTTPError as exc:
                await asyncio.sleep(self._retry_delay(exc, attempt))
        raise AssertionError("unreachable")  # pragma: no cover

    def __repr__(self) -> str:
        return f"{type(self).__name__}(endpoint={self.endpoint!r}, model={self.model_id!r})"


async def _keep(backend: RemoteGenBackend, loop: Any, state: dict[str, Any]) -> Any:
    """Holds a loop's clients; finalised (by the loop's shutdown) it closes them."""
    ref = weakref.ref(loop)
    del loop
    try:
        yield None
    finally:
        await backend._release_loop(ref(), state)


def _role(prompts: list[GenPrompt | Exception], i: int) -> Role:
    prompt = prompts[i]
    assert isinstance(prompt, GenPrompt)
    return prompt.role


def _outcome(future: Any) -> GenAnswer | Exception:
    try:
        result: GenAnswer = future.result()
        return result
    except CancelledError:
        return SessionClosedError("the backend was closed while this check was running")
    except Exception as exc:
        return exc
