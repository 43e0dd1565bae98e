"""One guarded chat-model call: prompt, held-back stream, final checks, one ending.

`Flow.run` and `Flow.arun` are the sync and async twins of the same steps; each step plans
(pure, in `chat_parts`), makes one call to a guard, and applies the verdicts here. The stream
itself goes through the one hold-back loop (`HoldBack.run` / ``arun``) or, without a Stream
guard, the one buffered Gen check (`buffer_and_check`).
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator, Callable, Generator, Iterator
from contextlib import aclosing, closing
from typing import TYPE_CHECKING, Any, cast

from langchain_core.messages import AIMessageChunk, BaseMessage
from langchain_core.runnables import RunnableConfig

from ..core.actions import BlockAction, render_refusal
from ..core.errors import UnsafeContentError
from ..core.labels import Level, Role
from ..core.verdict import Verdict
from ..guards.holdback import HoldBack, abuffer_and_check, buffer_and_check
from ..guards.session import AsyncStreamSession, StreamSession
from .chat_parts import Conversation, Outbox, tool_call_texts
from .prompt_check import AsyncParallelStart, ParallelStart
from .reporting import Stage, adispatch_verdict, dispatch_verdict, with_verdicts

if TYPE_CHECKING:
    from .chat_model import GuardedChatModel

__all__ = ["STAGE_WORDS", "Flow"]

#: How a stage is named in a refusal template's ``{stage}``.
STAGE_WORDS = {
    "prompt": "request",
    "response": "answer",
    "stream": "answer",
    "tool_call": "tool call",
    "tool_result": "tool result",
}

# one planned final check: its stage and what Gen (or a fresh Stream session) reads
_Final = list[tuple[Stage, Any]]


class Flow:
    """The state of one call of ``model`` (verdicts so far, where events go)."""

    def __init__(self, model: GuardedChatModel, *, events: RunnableConfig) -> None:
        self.model = model
        self.events = events
        self.verdicts: dict[str, Verdict] = {}

    # --- pure: plans and endings ---------------------------------------------------------------
    def _record(self, stage: Stage, verdict: Verdict, blocked: bool) -> None:
        if stage != "tool_call" or blocked or stage not in self.verdicts:
            self.verdicts[stage] = verdict

    def _wants_prompt(self, convo: Conversation) -> bool:
        return self.model.check_prompt and convo.ends_with_user

    def _parallel(self, convo: Conversation) -> bool:
        return self.model.prompt_check == "parallel" and self._wants_prompt(convo)

    def _final_plan(self, convo: Conversation, box: Outbox, streamed: bool) -> _Final:
        plan: _Final = []
        m = self.model
        text = box.moderated_text
        if m.guard is not None and m.check_response and streamed and text.strip():
            plan.append(("response", (convo.response_context, text)))
        merged = box.merged()
        if m.check_tool_calls and merged is not None:
            plan += [("tool_call", (convo.until_user, t)) for t in tool_call_texts(merged)]
        return plan

    def _ending(self, stage: Stage, verdict: Verdict, box: Outbox | None) -> AIMessageChunk:
        """The refusal chunk of a block (or the typed error, ``on_block="raise"``)."""
        if box is not None:
            box.drop()
        m = self.model
        if m.on_block is BlockAction.RAISE:
            error = UnsafeContentError(verdict)
            setattr(error, "stage", stage)  # noqa: B010  (which check blocked, for the middleware)
            raise error
        text = render_refusal(m.refusal, verdict, stage=STAGE_WORDS[stage])
        if box is not None and box.released_any:
            text = "\n\n" + text
        chunk = AIMessageChunk(
            content=text, id=box.message_id if box else None, chunk_position="last"
        )
        return with_verdicts(chunk, self.verdicts, text=m.metadata_text)

    def _last(self, box: Outbox) -> AIMessageChunk:
        """The last chunk of a cleared answer: the checked tool calls and the verdicts."""
        merged = box.merged()
        chunk = AIMessageChunk(
            content=[] if merged is not None and isinstance(merged.content, list) else "",
            id=box.message_id,
            tool_call_chunks=list(merged.tool_call_chunks) if merged is not None else [],
            chunk_position="last",
        )
        return with_verdicts(chunk, self.verdicts, text=self.model.metadata_text)

    @staticmethod
    def _safe(session: StreamSession) -> Verdict:
        if session.verdict is not None:
            return session.verdict
        return Verdict(
            level=Level.SAFE,
            role=Role.RESPONSE,
            model=session.prompt_verdict.model,
            backend=session.prompt_verdict.backend,
        )

    # --- sync ----------------------------------------------------------------------------------
    def _note(self, stage: Stage, verdict: Verdict, blocked: bool | None = None) -> bool:
        blocked = self.model.blocks(verdict) if blocked is None else blocked
        self._record(stage, verdict, blocked)
        dispatch_verdict(stage, verdict, blocked, self.events)
        return blocked

    def run(
        self, messages: list[BaseMessage], inner: Callable[[], Iterator[Any]]
    ) -> Generator[AIMessageChunk, None, None]:
        """The guarded call (sync)."""
        m, convo = self.model, Conversation.of(messages)
        session: StreamSession | None = None
        parallel: ParallelStart | None = None
        try:
            if self._parallel(convo):  # the inner model starts now; nothing out before the verdict
                parallel = ParallelStart(self, convo, inner)
                session, inner = parallel.session, parallel.items
                if parallel.blocked is not None:
                    yield parallel.ending()
                    return
            elif m.stream_guard is not None:
                session = m.stream_guard.session(convo.until_user)
            if self._wants_prompt(convo) and parallel is None:
                pv = m.guard.check_prompt(convo.full) if m.guard is not None else None
                pv = pv if pv is not None else session.prompt_verdict  # type: ignore[union-attr]
                if self._note("prompt", pv):
                    yield self._ending("prompt", pv, None)
                    return
            box = Outbox(reasoning=m.reasoning == "moderate")
            if session is not None:
                hold = HoldBack(session)
                releases = cast(Generator[Any, None, None], hold.run(inner(), text_of=box.read))
                with closing(releases):
                    for rel in releases:
                        if rel.blocked:
                            assert rel.verdict is not None
                            releases.close()  # the inner model stops now, not at the next read
                            self._note("stream", rel.verdict, True)
                            yield self._ending("stream", rel.verdict, box)
                            return
                        yield from box.take(len(hold.released_text))
                self._note("stream", self._safe(session), False)
            elif not m.check_response:  # nothing to hold the text for: only tool calls wait
                for item in inner():
                    box.read(item)
                    yield from box.take_all()
            else:
                checked = buffer_and_check(
                    m.guard, convo.response_context, inner(), text_of=box.read
                )
                for rel in checked:
                    if rel.done and rel.verdict is not None and self._note("response", rel.verdict):
                        yield self._ending("response", rel.verdict, box)
                        return
            plan = self._final_plan(convo, box, streamed=session is not None)
            for (stage, _), v in zip(plan, self._check(plan, convo)):
                if self._note(stage, v):
                    yield self._ending(stage, v, box)
                    return
            yield from box.take_all()
            yield self._last(box)
        finally:
            if parallel is not None:
                parallel.close()
            if session is not None:
                session.close()

    def _check(self, plan: _Final, convo: Conversation) -> list[Verdict]:
        if not plan:
            return []
        m = self.model
        if m.guard is not None:
            return list(m.guard.check_batch([item for _, item in plan]))
        verdicts = []
        for _, (context, text) in plan:  # tool calls, Stream head only: one session each
            with m.stream_guard.session(context) as s:
                s.feed(text)
                s.finish()
                verdicts.append(self._safe(s))
        return verdicts

    # --- async ---------------------------------------------------------------------------------
    async def _anote(self, stage: Stage, verdict: Verdict, blocked: bool | None = None) -> bool:
        blocked = self.model.blocks(verdict) if blocked is None else blocked
        self._record(stage, verdict, blocked)
        await adispatch_verdict(stage, verdict, blocked, self.events)
        return blocked

    async def arun(
        self, messages: list[BaseMessage], inner: Callable[[], AsyncIterator[Any]]
    ) -> AsyncGenerator[AIMessageChunk, None]:
        """Async twin of `run`."""
        m, convo = self.model, Conversation.of(messages)
        session: AsyncStreamSession | None = None
        parallel: AsyncParallelStart | None = None
        try:
            if self._parallel(convo):
                parallel = await AsyncParallelStart.start(self, convo, inner)
                session, inner = parallel.session, parallel.items
                if parallel.blocked is not None:
                    yield parallel.ending()
                    return
            elif m.stream_guard is not None:
                session = await m.stream_guard.asession(convo.until_user).start()
            if self._wants_prompt(convo) and parallel is None:
                pv = await m.guard.acheck_prompt(convo.full) if m.guard is not None else None
                pv = pv if pv is not None else session.prompt_verdict  # type: ignore[union-attr]
                if await self._anote("prompt", pv):
                    yield self._ending("prompt", pv, None)
                    return
            box = Outbox(reasoning=m.reasoning == "moderate")
            if session is not None:
                hold = HoldBack(session)
                areleases = cast(AsyncGenerator[Any, None], hold.arun(inner(), text_of=box.read))
                async with aclosing(areleases):
                    async for rel in areleases:
                        if rel.blocked:
                            assert rel.verdict is not None
                            await areleases.aclose()  # the inner model stops now
                            await self._anote("stream", rel.verdict, True)
                            yield self._ending("stream", rel.verdict, box)
                            return
                        for chunk in box.take(len(hold.released_text)):
                            yield chunk
                await self._anote("stream", self._safe(session.session), False)
            elif not m.check_response:
                async for item in inner():
                    box.read(item)
                    for chunk in box.take_all():
                        yield chunk
            else:
                checked = abuffer_and_check(
                    m.guard, convo.response_context, inner(), text_of=box.read
                )
                async for rel in checked:
                    if rel.done and rel.verdict is not None:
                        if await self._anote("response", rel.verdict):
                            yield self._ending("response", rel.verdict, box)
                            return
            plan = self._final_plan(convo, box, streamed=session is not None)
            for (stage, _), v in zip(plan, await self._acheck(plan)):
                if await self._anote(stage, v):
                    yield self._ending(stage, v, box)
                    return
            for chunk in box.take_all():
                yield chunk
            yield self._last(box)
        finally:
            if parallel is not None:
                await parallel.aclose()
            if session is not None:
                await session.aclose()

    async def _acheck(self, plan: _Final) -> list[Verdict]:
        if not plan:
            return []
        m = self.model
        if m.guard is not None:
            return list(await m.guard.acheck_batch([item for _, item in plan]))
        verdicts = []
        for _, (context, text) in plan:
            async with m.stream_guard.asession(context) as s:
                await s.afeed(text)
                await s.afinish()
                verdicts.append(self._safe(s.session))
        return verdicts
