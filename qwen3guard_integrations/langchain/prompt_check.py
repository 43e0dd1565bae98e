"""The prompt check in parallel with the inner model (``guard_model(prompt_check="parallel")``).

In ``"before"`` mode (the default) the guarded model checks the prompt and only then starts the
inner model, so the check lands on the time to first token. In ``"parallel"`` mode
`ParallelStart` (sync) and `AsyncParallelStart` (async) start the inner model first and run
the prompt pass meanwhile:

- the inner model runs in a pump (a worker thread with the caller's context, or an asyncio
  task) that pulls its stream freely until the prompt verdict is in; nothing it produced is
  released before (no token, no tool call, no event with model text: the chunks wait in the
  pump);
- on a blocked prompt the pump stops at once: the task is cancelled and the inner async
  generator closed; a sync stream cannot be interrupted inside a read, so the worker stops
  after the read in flight and closes the generator (at most one more chunk is produced; an
  inner model that is invoked, not streamed, runs to its end and its answer is thrown away).
  The blocked verdict event carries the cost (`PromptCost`: chunks produced and discarded) and
  so does the refusal chunk's ``response_metadata["qwen3guard_cost"]`` (or the raised
  `UnsafeContentError`'s ``cost`` attribute); the run then ends as in ``"before"`` mode;
- on a safe prompt the buffered chunks go on through the same hold-back loop, and from then on
  the pump reads one chunk per request, as the loop consumes them (a Stream block still stops
  the inner model within a few chunks).

The prompt pass is the one of ``"before"`` mode: with a Gen ``guard`` its verdict decides, and
the Stream session (its prefill is needed to moderate the answer) is opened only once Gen
cleared the prompt; with a Stream guard alone the session's own prompt verdict decides.
"""

from __future__ import annotations

import asyncio
import contextvars
import threading
from collections import deque
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Generator, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from langchain_core.callbacks.manager import adispatch_custom_event, dispatch_custom_event
from langchain_core.messages import AIMessageChunk

from ..core.errors import UnsafeContentError
from ..core.verdict import Verdict
from ..guards.session import AsyncStreamSession, StreamSession
from .chat_parts import Conversation
from .reporting import VERDICT_EVENT, verdict_event

if TYPE_CHECKING:
    from .chat_flow import Flow

__all__ = ["COST_KEY", "PROMPT_CHECKS", "AsyncParallelStart", "ParallelStart", "PromptCost"]

#: The values of ``guard_model(prompt_check=...)``.
PROMPT_CHECKS = ("before", "parallel")
#: Key of the cost of a parallel prompt check in a refusal chunk's ``response_metadata``.
COST_KEY = "qwen3guard_cost"


@dataclass(frozen=True)
class PromptCost:
    """What the inner model produced while the prompt was checked in parallel.

    Attributes:
        inner_chunks: chunks the inner model had produced when the verdict came in.
        discarded: of those, how many were thrown away (all of them for a blocked prompt,
            none for a cleared one).
        in_flight: a blocked prompt only: whether a read of the inner model was under way
            when it was stopped (async: cancelled; sync: it runs to its end and its result is
            thrown away, a whole answer for an inner model that is invoked, not streamed).
    """

    inner_chunks: int
    discarded: int
    in_flight: bool = False

    def as_dict(self) -> dict[str, Any]:
        """The JSON-ready form events and metadata carry."""
        return {
            "prompt_check": "parallel",
            "inner_chunks": self.inner_chunks,
            "inner_chunks_discarded": self.discarded,
            "inner_read_in_flight": self.in_flight,
        }


class _End:
    """The inner stream ended."""


@dataclass(frozen=True)
class _Failure:
    error: BaseException


_END = _End()


def _close(source: object) -> None:
    close = getattr(source, "close", None)
    if callable(close):
        close()


class _Pump:
    """Pulls the inner stream in a worker thread: freely until `demand`, then one item per
    `get`; after `stop` it reads nothing more (the read in flight ends first) and closes it."""

    def __init__(self, make: Callable[[], Iterator[Any]]) -> None:
        self._cond = threading.Condition()
        self._items: deque[Any] = deque()
        self._free = True
        self._stopped = False
        self._wanted = 0
        self._put = 0
        self._taken = 0
        self.produced = 0
        self.reading = False
        context = contextvars.copy_context()  # LangChain's run context goes with the inner call
        self._thread = threading.Thread(
            target=context.run, args=(self._work, make), name="qwen3guard-inner", daemon=True
        )
        self._thread.start()

    def _work(self, make: Callable[[], Iterator[Any]]) -> None:
        source: Iterator[Any] | None = None
        try:
            self.reading = True  # an invoked (not streamed) inner model runs in make()
            source = make()
            while True:
                with self._cond:
                    while not (self._stopped or self._free or self._put < self._wanted):
                        self._cond.wait()
                    if self._stopped:
                        return
                self.reading = True
                try:
                    item: Any = next(source)
                except StopIteration:
                    item = _END
                with self._cond:
                    self.reading = False
                    if item is not _END:
                        self.produced += 1
                    if self._stopped:
                        return
                    self._items.append(item)
                    self._put += 1
                    self._cond.notify_all()
                if item is _END:
                    return
        except BaseException as exc:  # handed to the consumer, raised there
            with self._cond:
                self._items.append(_Failure(exc))
                self._cond.notify_all()
        finally:
            if source is not None:
                _close(source)

    def demand(self) -> None:
        """From now on read one item per `get`."""
        with self._cond:
            self._free = False

    def stop(self) -> PromptCost:
        """Read nothing more; returns what was produced (and thrown away) so far."""
        with self._cond:
            self._stopped = True
            self._cond.notify_all()
            return PromptCost(self.produced, self.produced, self.reading)

    def get(self) -> Any:
        with self._cond:
            if not self._items:
                self._wanted = max(self._wanted, self._taken + 1)
                self._cond.notify_all()
            while not self._items:
                self._cond.wait()
            self._taken += 1
            return self._items.popleft()

    def items(self) -> Generator[Any, None, None]:
        """The inner stream, buffered items first (closing it stops the pump)."""
        try:
            while True:
                item = self.get()
                if item is _END:
                    return
                if isinstance(item, _Failure):
                    raise item.error
                yield item
        finally:
            self.stop()


class _APump:
    """Async twin of `_Pump`: an asyncio task; `stop` cancels it and closes the inner stream."""

    def __init__(self, make: Callable[[], AsyncIterator[Any]]) -> None:
        self._cond = asyncio.Condition()
        self._items: deque[Any] = deque()
        self._free = True
        self._wanted = 0
        self._put = 0
        self._taken = 0
        self.produced = 0
        self.reading = False
        self._task = asyncio.ensure_future(self._work(make))

    async def _work(self, make: Callable[[], AsyncIterator[Any]]) -> None:
        source: AsyncIterator[Any] | None = None
        try:
            self.reading = True
            source = make()
            while True:
                async with self._cond:
                    await self._cond.wait_for(lambda: self._free or self._put < self._wanted)
                self.reading = True
                try:
                    item: Any = await anext(source)
                    self.produced += 1
                except StopAsyncIteration:
                    item = _END
                self.reading = False
                await self._push(item)
                if item is _END:
                    return
        except asyncio.CancelledError:
            raise
        except BaseException as exc:
            await self._push(_Failure(exc))
        finally:
            aclose = getattr(source, "aclose", None)
            if callable(aclose):
                await aclose()

    async def _push(self, item: Any) -> None:
        async with self._cond:
            self._items.append(item)
            self._put += 1
            self._cond.notify_all()

    def demand(self) -> None:
        """From now on read one item per `get`."""
        self._free = False

    async def stop(self) -> PromptCost:
        """Cancel the pump and close the inner stream; returns what was produced (and thrown
        away)."""
        cost = PromptCost(self.produced, self.produced, self.reading and not self._task.done())
        if not self._task.done():
            self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)
        return cost

    async def get(self) -> Any:
        async with self._cond:
            if not self._items:
                self._wanted = max(self._wanted, self._taken + 1)
                self._cond.notify_all()
            await self._cond.wait_for(lambda: bool(self._items))
            self._taken += 1
            return self._items.popleft()

    async def items(self) -> AsyncGenerator[Any, None]:
        """Async twin of `_Pump.items`."""
        try:
            while True:
                item = await self.get()
                if item is _END:
                    return
                if isinstance(item, _Failure):
                    raise item.error
                yield item
        finally:
            await self.stop()


def _cost_ending(flow: Flow, verdict: Verdict, cost: PromptCost) -> AIMessageChunk:
    """The blocked prompt's ending of ``"before"`` mode, with the cost attached."""
    try:
        chunk = flow._ending("prompt", verdict, None)
    except UnsafeContentError as error:
        setattr(error, "cost", cost)  # noqa: B010
        raise
    meta = {**(chunk.response_metadata or {}), COST_KEY: cost.as_dict()}
    return chunk.model_copy(update={"response_metadata": meta})


def _event(verdict: Verdict, blocked: bool, cost: PromptCost) -> dict[str, Any]:
    return {**verdict_event("prompt", verdict, blocked), **cost.as_dict()}


class ParallelStart:
    """Starts the inner model, checks the prompt meanwhile, and says how the call goes on.

    After construction either `blocked` is the blocking prompt verdict (the pump is stopped;
    `ending` is the run's last chunk) or `items` gives the inner stream, buffered chunks first.
    `session` is the Stream session to moderate the answer with (None without a Stream guard
    or for a blocked prompt).
    """

    def __init__(self, flow: Flow, convo: Conversation, inner: Callable[[], Iterator[Any]]):
        self.flow = flow
        self.session: StreamSession | None = None
        self.blocked: Verdict | None = None
        self._pump = _Pump(inner)
        try:
            verdict = self._check(convo)
        except BaseException:
            self._pump.stop()
            raise
        blocked = flow.model.blocks(verdict)
        if blocked:
            self.blocked, self.cost = verdict, self._pump.stop()
        else:
            self._pump.demand()
            self.cost = PromptCost(self._pump.produced, 0)
        flow._record("prompt", verdict, blocked)
        if flow.events.get("callbacks"):
            data = _event(verdict, blocked, self.cost)
            dispatch_custom_event(VERDICT_EVENT, data, config=flow.events)

    def _check(self, convo: Conversation) -> Verdict:
        m = self.flow.model
        if m.guard is not None:
            verdict: Verdict = m.guard.check_prompt(convo.full)
            if m.blocks(verdict) or m.stream_guard is None:
                return verdict
            self.session = m.stream_guard.session(convo.until_user)
            return verdict
        self.session = m.stream_guard.session(convo.until_user)
        return self.session.prompt_verdict

    def items(self) -> Iterator[Any]:
        """The inner model's stream (its buffered chunks first)."""
        return self._pump.items()

    def ending(self) -> AIMessageChunk:
        """The last chunk of a blocked prompt (or its `UnsafeContentError`)."""
        assert self.blocked is not None
        return _cost_ending(self.flow, self.blocked, self.cost)

    def close(self) -> None:
        """Stop the inner model if it still runs."""
        self._pump.stop()


class AsyncParallelStart:
    """Async twin of `ParallelStart`: build it with ``await AsyncParallelStart.start(...)``."""

    def __init__(self, flow: Flow, pump: _APump) -> None:
        self.flow = flow
        self.session: AsyncStreamSession | None = None
        self.blocked: Verdict | None = None
        self.cost = PromptCost(0, 0)
        self._pump = pump

    @classmethod
    async def start(
        cls, flow: Flow, convo: Conversation, inner: Callable[[], AsyncIterator[Any]]
    ) -> AsyncParallelStart:
        """Start the inner model and check the prompt meanwhile."""
        self = cls(flow, _APump(inner))
        try:
            verdict = await self._check(convo)
        except BaseException:
            await self._pump.stop()
            raise
        blocked = flow.model.blocks(verdict)
        if blocked:
            self.blocked, self.cost = verdict, await self._pump.stop()
        else:
            self._pump.demand()
            self.cost = PromptCost(self._pump.produced, 0)
        flow._record("prompt", verdict, blocked)
        if flow.events.get("callbacks"):
            data = _event(verdict, blocked, self.cost)
            await adispatch_custom_event(VERDICT_EVENT, data, config=flow.events)
        return self

    async def _check(self, convo: Conversation) -> Verdict:
        m = self.flow.model
        if m.guard is not None:
            verdict: Verdict = await m.guard.acheck_prompt(convo.full)
            if m.blocks(verdict) or m.stream_guard is None:
                return verdict
            self.session = await m.stream_guard.asession(convo.until_user).start()
            return verdict
        self.session = await m.stream_guard.asession(convo.until_user).start()
        return self.session.prompt_verdict

    def items(self) -> AsyncIterator[Any]:
        """The inner model's stream (its buffered chunks first)."""
        return self._pump.items()

    def ending(self) -> AIMessageChunk:
        """The last chunk of a blocked prompt (or its `UnsafeContentError`)."""
        assert self.blocked is not None
        return _cost_ending(self.flow, self.blocked, self.cost)

    async def aclose(self) -> None:
        """Stop the inner model if it still runs."""
        await self._pump.stop()
