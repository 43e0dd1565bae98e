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

from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from langchain_core.callbacks.manager import adispatch_custom_event, dispatch_custom_event
from langchain_core.messages import AIMessageChunk

from ..core.errors import UnsafeContentError
from ..core.verdict import Verdict
from ..guards.session import AsyncStreamSession, StreamSession
from .chat_parts import Conversation
from .inner_pump import AsyncInnerPump, InnerPump
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


class _Start:
    """What `ParallelStart` and `AsyncParallelStart` share: the plan of the prompt pass and what
    its verdict does (each makes the I/O calls in between)."""

    flow: Flow
    session: StreamSession | AsyncStreamSession | None
    blocked: Verdict | None
    cost: PromptCost
    _pump: InnerPump | AsyncInnerPump

    def _opens_session(self, verdict: Verdict | None) -> bool:
        """Whether the Stream session opens after Gen's ``verdict`` (None: no Gen guard)."""
        m = self.flow.model
        return m.stream_guard is not None and (verdict is None or not m.blocks(verdict))

    def _prompt_verdict(self, verdict: Verdict | None) -> Verdict:
        if verdict is not None:
            return verdict
        assert self.session is not None
        return self.session.prompt_verdict

    def _settle(self, verdict: Verdict, stopped: tuple[int, bool] | None) -> dict[str, Any] | None:
        """Apply the prompt ``verdict`` (``stopped``: the stopped pump's counts when it blocks);
        returns the verdict event's data to dispatch (None without callbacks)."""
        if stopped is not None:
            produced, in_flight = stopped
            self.blocked, self.cost = verdict, PromptCost(produced, produced, in_flight)
        else:
            self._pump.demand()
            self.cost = PromptCost(self._pump.produced, 0)
        self.flow._record("prompt", verdict, stopped is not None)
        if self.flow.events.get("callbacks"):
            return _event(verdict, stopped is not None, self.cost)
        return None

    def ending(self) -> AIMessageChunk:
        """The last chunk of a blocked prompt (or its `UnsafeContentError`)."""
        assert self.blocked is not None
        return _cost_ending(self.flow, self.blocked, self.cost)


class ParallelStart(_Start):
    """Starts the inner model, checks the prompt meanwhile, and says how the call goes on.

    After construction either `blocked` is the blocking prompt verdict (the pump is stopped;
    `ending` is the run's last chunk) or `items` gives the inner stream, buffered chunks first.
    `session` is the Stream session to moderate the answer with (None without a Stream guard
    or for a blocked prompt).
    """

    def __init__(self, flow: Flow, convo: Conversation, inner: Callable[[], Iterator[Any]]):
        self.flow = flow
        self.session: StreamSession | None = None
        self.blocked = None
        self._pump: InnerPump = InnerPump(inner)
        pump = self._pump
        try:
            verdict = self._check(convo)
        except BaseException:
            pump.stop()
            raise
        data = self._settle(verdict, pump.stop() if flow.model.blocks(verdict) else None)
        if data is not None:
            dispatch_custom_event(VERDICT_EVENT, data, config=flow.events)

    def _check(self, convo: Conversation) -> Verdict:
        m = self.flow.model
        gen: Verdict | None = None if m.guard is None else m.guard.check_prompt(convo.full)
        if self._opens_session(gen):
            self.session = m.stream_guard.session(convo.until_user)
        return self._prompt_verdict(gen)

    def items(self) -> Iterator[Any]:
        """The inner model's stream (its buffered chunks first)."""
        return self._pump.items()

    def close(self) -> None:
        """Stop the inner model if it still runs."""
        self._pump.stop()


class AsyncParallelStart(_Start):
    """Async twin of `ParallelStart`: build it with ``await AsyncParallelStart.start(...)``."""

    def __init__(self, flow: Flow, pump: AsyncInnerPump) -> None:
        self.flow = flow
        self.session: AsyncStreamSession | None = None
        self.blocked = None
        self.cost = PromptCost(0, 0)
        self._pump: AsyncInnerPump = pump

    @classmethod
    async def start(
        cls, flow: Flow, convo: Conversation, inner: Callable[[], AsyncIterator[Any]]
    ) -> AsyncParallelStart:
        """Start the inner model and check the prompt meanwhile."""
        self = cls(flow, pump := AsyncInnerPump(inner))
        try:
            verdict = await self._check(convo)
        except BaseException:
            await pump.stop()
            raise
        data = self._settle(verdict, await pump.stop() if flow.model.blocks(verdict) else None)
        if data is not None:
            await adispatch_custom_event(VERDICT_EVENT, data, config=flow.events)
        return self

    async def _check(self, convo: Conversation) -> Verdict:
        m = self.flow.model
        gen: Verdict | None = None if m.guard is None else await m.guard.acheck_prompt(convo.full)
        if self._opens_session(gen):
            self.session = await m.stream_guard.asession(convo.until_user).start()
        return self._prompt_verdict(gen)

    def items(self) -> AsyncIterator[Any]:
        """The inner model's stream (its buffered chunks first)."""
        return self._pump.items()

    async def aclose(self) -> None:
        """Stop the inner model if it still runs."""
        await self._pump.stop()
