"""A chat engine that checks the message before, and every LLM output before anyone sees it.

```python
inner = index.as_chat_engine(chat_mode="condense_plus_context")   # or "context", "simple"
engine = GuardedChatEngine(inner, guard=guard, stream_guard=stream_guard)
response = engine.stream_chat("Tell me about Paris.")
for text in response.response_gen:   # only text the Stream head has cleared
    print(text, end="")
```

Each turn runs the wrapped engine with its LLM swapped for a `GuardedLLM` (on a shallow copy of
the engine: the memory, retriever and postprocessors are the wrapped engine's own). So every
channel downstream of the LLM gets only cleared text: the engine's answer and its
``response_gen`` / ``async_response_gen``, the engine's memory, LlamaIndex's
``StreamChatDeltaReceivedEvent`` events, and the condensed question of
``condense_plus_context``. The LLM's own trace events (``LLMCompletionInProgressEvent`` and the
like) record what it generated up to where it was stopped, as traces do.
"""

from __future__ import annotations

import copy
from collections.abc import AsyncGenerator, Generator
from dataclasses import dataclass, field
from typing import Any

from llama_index.core.base.llms.types import ChatMessage, ChatResponse, MessageRole
from llama_index.core.chat_engine import (
    CondensePlusContextChatEngine,
    ContextChatEngine,
    SimpleChatEngine,
)
from llama_index.core.chat_engine.types import (
    AgentChatResponse,
    BaseChatEngine,
    StreamingAgentChatResponse,
)
from llama_index.core.memory import BaseMemory

from ..core.actions import DEFAULT_REFUSAL, BlockAction
from ..core.errors import ConfigurationError, UnsafeContentError
from ..guards.gen import Qwen3Guard
from ..guards.stream import Qwen3StreamGuard
from .answer import AnswerOptions, GuardedAnswer
from .events import aemit, emit
from .guarded_llm import GuardedLLM
from .postprocessor import METADATA_KEY

__all__ = ["SUPPORTED_ENGINES", "GuardedChatEngine", "GuardedStreamingChatResponse"]

#: The chat engines `GuardedChatEngine` wraps (``as_chat_engine`` modes ``simple``,
#: ``context``, ``condense_plus_context``/``best``), and their subclasses.
SUPPORTED_ENGINES = (SimpleChatEngine, ContextChatEngine, CondensePlusContextChatEngine)


@dataclass
class GuardedStreamingChatResponse(StreamingAgentChatResponse):
    """A ``StreamingAgentChatResponse`` whose stream holds only cleared text, then the ending.

    Attributes:
        metadata: ``{metadata_key: record}``: the turn's verdicts (see `GuardedChatEngine`);
            read it after the stream.
    """

    metadata: dict[str, Any] = field(default_factory=dict)


class GuardedChatEngine(BaseChatEngine):
    """Wraps a LlamaIndex chat engine; see the module docstring.

    1. The message is checked in prompt mode before the engine runs: a blocked message never
       reaches the memory, the retriever or the LLM.
    2. Every whole output of the LLM (the answer of ``chat``, the condensed question) is checked
       in response mode, with the message as its prompt, before the engine sees it.
    3. A streamed answer is held back: with ``stream_guard`` only text the Stream head has
       cleared is released and the LLM's stream is closed at the block; without one it is
       buffered and checked with ``guard``, then released piece by piece.

    On a block, ``on_unsafe="raise"`` raises `UnsafeContentError` (from ``chat``, or from
    the stream after the cleared text); ``"refuse"`` answers the refusal instead: a stream ends
    with it as a piece of its own (after a blank line when text was released before it). The
    engine's memory then holds the message and, as the answer, what a refused turn shows (the
    released text, then the refusal), never the blocked text, whichever ``on_unsafe``.

    Verdicts go into ``response.metadata[metadata_key]`` (``"query"``, ``"response"``,
    ``"blocked"``, ``"complete"`` for streams; without the flagged ``text_until`` unless
    ``include_text``) and are sent as `Qwen3GuardVerdictEvent` (with the text, for audit).

    Args:
        engine: a ``SimpleChatEngine``, ``ContextChatEngine`` or
            ``CondensePlusContextChatEngine`` (what ``index.as_chat_engine()`` returns in modes
            ``simple``, ``context``, ``condense_plus_context``).
        guard: the Gen guard (the message, whole outputs, streams without ``stream_guard``).
        stream_guard: the Stream guard for streamed answers.
        check_query: check the message first.
        on_unsafe: `BlockAction` ``"raise"`` or ``"refuse"``.
        refusal: the refusal template (`render_refusal`).
        metadata_key: where verdicts go in the response's metadata.
        include_text: keep ``text_until`` in the metadata.

    Raises:
        ConfigurationError: at construction, for an engine, guard or option it cannot use.
    """

    def __init__(
        self,
        engine: BaseChatEngine,
        guard: Qwen3Guard,
        *,
        stream_guard: Qwen3StreamGuard | None = None,
        check_query: bool = True,
        on_unsafe: BlockAction | str = BlockAction.RAISE,
        refusal: str = DEFAULT_REFUSAL,
        metadata_key: str = METADATA_KEY,
        include_text: bool = False,
    ) -> None:
        if not isinstance(engine, SUPPORTED_ENGINES):
            names = ", ".join(c.__name__ for c in SUPPORTED_ENGINES)
            hint = (
                "; for a CondenseQuestionChatEngine, wrap its query engine in GuardedQueryEngine"
                if type(engine).__name__ == "CondenseQuestionChatEngine"
                else ""
            )
            raise ConfigurationError(
                f"GuardedChatEngine wraps a LlamaIndex BaseChatEngine of the kinds {names}, "
                f"got {type(engine).__name__}{hint}"
            )
        self.options = AnswerOptions(
            "GuardedChatEngine", guard, stream_guard, on_unsafe, refusal, include_text
        )
        self.engine = engine
        self.guard = guard
        self.stream_guard = stream_guard
        self.check_query = check_query
        self.on_unsafe = self.options.on_unsafe
        self.refusal = self.options.refusal
        self.metadata_key = metadata_key

    # -- the pure parts ------------------------------------------------------------------------
    def _bound(self, answer: GuardedAnswer) -> Any:
        """A shallow copy of the wrapped engine whose LLM is guarded for this turn."""
        turn = copy.copy(self.engine)
        turn._llm = GuardedLLM(self.engine._llm, answer)
        return turn

    @property
    def _memory(self) -> BaseMemory:
        return self.engine._memory

    @staticmethod
    def _claim(err: UnsafeContentError, answer: GuardedAnswer) -> None:
        """Re-raise ``err`` unless it is this turn's block (raised by its `GuardedLLM`)."""
        if answer.blocked_by is None or err.verdict is not answer.blocked_by:
            raise err

    def _refused(self, answer: GuardedAnswer) -> AgentChatResponse:
        """A blocked turn of ``chat``: raise, or the refusal answer."""
        if answer.action is BlockAction.RAISE:
            raise answer.error()
        return AgentChatResponse(
            response=answer.refusal_text(), metadata={self.metadata_key: answer.record}
        )

    def _refused_stream(
        self, answer: GuardedAnswer, *, is_async: bool
    ) -> GuardedStreamingChatResponse:
        """A turn of ``stream_chat`` blocked before anything streamed: raise, or a stream that
        yields the refusal."""
        text = self._refused(answer).response
        answer.record["complete"] = True
        pieces = [text] if text else []
        metadata = {self.metadata_key: answer.record}
        if is_async:
            return GuardedStreamingChatResponse(
                achat_stream=_apieces(pieces), is_writing_to_memory=False, metadata=metadata
            )
        return GuardedStreamingChatResponse(
            chat_stream=_pieces(pieces), is_writing_to_memory=False, metadata=metadata
        )

    def _remembered(
        self, history: list[ChatMessage], message: str, answer: GuardedAnswer
    ) -> list[ChatMessage]:
        """What to add to memory after a whole answer was blocked: the message (unless the
        engine stored it already) and the refusal."""
        out: list[ChatMessage] = []
        if not (
            history and history[-1].role == MessageRole.USER and history[-1].content == message
        ):
            out.append(ChatMessage(role=MessageRole.USER, content=message))
        text = answer.refusal_text()
        if text:
            out.append(ChatMessage(role=MessageRole.ASSISTANT, content=text))
        return out

    def _streamed(
        self,
        inner: StreamingAgentChatResponse,
        answer: GuardedAnswer,
        chat_stream: Any = None,
        achat_stream: Any = None,
    ) -> GuardedStreamingChatResponse:
        return GuardedStreamingChatResponse(
            chat_stream=chat_stream,
            achat_stream=achat_stream,
            sources=inner.sources,
            source_nodes=inner.source_nodes,
            is_writing_to_memory=False,
            metadata={self.metadata_key: answer.record},
        )

    # -- BaseChatEngine: the I/O ---------------------------------------------------------------
    def chat(
        self, message: str, chat_history: list[ChatMessage] | None = None
    ) -> AgentChatResponse:
        """Chat, with the message and the answer checked."""
        answer = self.options.answer(message)
        if self._query_blocked(answer):
            return self._refused(answer)
        if chat_history is not None:
            self._memory.set(chat_history)
        try:
            response: AgentChatResponse = self._bound(answer).chat(message)
        except UnsafeContentError as err:
            self._claim(err, answer)
            self._remember(message, answer)
            return self._refused(answer)
        response.metadata = {**(response.metadata or {}), self.metadata_key: answer.record}
        return response

    async def achat(
        self, message: str, chat_history: list[ChatMessage] | None = None
    ) -> AgentChatResponse:
        """Async twin of `chat`."""
        answer = self.options.answer(message)
        if await self._aquery_blocked(answer):
            return self._refused(answer)
        if chat_history is not None:
            await self._memory.aset(chat_history)
        try:
            response: AgentChatResponse = await self._bound(answer).achat(message)
        except UnsafeContentError as err:
            self._claim(err, answer)
            await self._aremember(message, answer)
            return self._refused(answer)
        response.metadata = {**(response.metadata or {}), self.metadata_key: answer.record}
        return response

    def stream_chat(
        self, message: str, chat_history: list[ChatMessage] | None = None
    ) -> StreamingAgentChatResponse:
        """Stream the answer: only cleared text, then the ending."""
        answer = self.options.answer(message)
        if self._query_blocked(answer):
            return self._refused_stream(answer, is_async=False)
        if chat_history is not None:
            self._memory.set(chat_history)
        answer.record["complete"] = False
        try:
            inner: StreamingAgentChatResponse = self._bound(answer).stream_chat(message)
        except UnsafeContentError as err:  # a whole output before the stream (condensing)
            self._claim(err, answer)
            self._remember(message, answer)
            return self._refused_stream(answer, is_async=False)
        return self._streamed(inner, answer, chat_stream=_consumer(inner, answer))

    async def astream_chat(
        self, message: str, chat_history: list[ChatMessage] | None = None
    ) -> StreamingAgentChatResponse:
        """Async twin of `stream_chat` (read it with ``async_response_gen()``)."""
        answer = self.options.answer(message)
        if await self._aquery_blocked(answer):
            return self._refused_stream(answer, is_async=True)
        if chat_history is not None:
            await self._memory.aset(chat_history)
        answer.record["complete"] = False
        try:
            inner: StreamingAgentChatResponse = await self._bound(answer).astream_chat(message)
        except UnsafeContentError as err:
            self._claim(err, answer)
            await self._aremember(message, answer)
            return self._refused_stream(answer, is_async=True)
        return self._streamed(inner, answer, achat_stream=_aconsumer(inner, answer))

    def _remember(self, message: str, answer: GuardedAnswer) -> None:
        for m in self._remembered(self._memory.get_all(), message, answer):
            self._memory.put(m)

    async def _aremember(self, message: str, answer: GuardedAnswer) -> None:
        for m in self._remembered(await self._memory.aget_all(), message, answer):
            await self._memory.aput(m)

    def _query_blocked(self, answer: GuardedAnswer) -> bool:
        if not self.check_query:
            return False
        verdict = self.guard.check_prompt(answer.query)
        emit(answer.event(verdict, self.guard.blocks(verdict), "query"))
        return answer.blocked_by is not None

    async def _aquery_blocked(self, answer: GuardedAnswer) -> bool:
        if not self.check_query:
            return False
        verdict = await self.guard.acheck_prompt(answer.query)
        await aemit(answer.event(verdict, self.guard.blocks(verdict), "query"))
        return answer.blocked_by is not None

    def reset(self) -> None:
        """Reset the wrapped engine's conversation."""
        self.engine.reset()

    @property
    def chat_history(self) -> list[ChatMessage]:
        """The wrapped engine's chat history."""
        return self.engine.chat_history


# -- what the consumer reads ---------------------------------------------------------------------
def _item(text: str, piece: str) -> ChatResponse:
    return ChatResponse(message=ChatMessage(role=MessageRole.ASSISTANT, content=text), delta=piece)


def _is_ending(answer: GuardedAnswer, seen: int) -> bool:
    """Whether the next piece of the engine's stream is the ending `GuardedLLM` added for
    the memory (the consumer gets `GuardedAnswer.end` instead)."""
    return answer.blocked_by is not None and seen >= len(answer.released)


def _consumer(
    inner: StreamingAgentChatResponse, answer: GuardedAnswer
) -> Generator[ChatResponse, None, None]:
    text = ""
    gen = inner.response_gen
    try:
        for piece in gen:
            if piece and not _is_ending(answer, len(text)):
                text += piece
                yield _item(text, piece)
    finally:
        gen.close()  # waits for the engine's memory writer
    for piece in answer.end():
        text += piece
        yield _item(text, piece)


async def _aconsumer(
    inner: StreamingAgentChatResponse, answer: GuardedAnswer
) -> AsyncGenerator[ChatResponse, None]:
    text = ""
    gen = inner.async_response_gen()
    try:
        async for piece in gen:
            if piece and not _is_ending(answer, len(text)):
                text += piece
                yield _item(text, piece)
    finally:
        await gen.aclose()  # waits for the engine's memory writer
    for piece in answer.end():
        text += piece
        yield _item(text, piece)


def _pieces(pieces: list[str]) -> Generator[ChatResponse, None, None]:
    text = ""
    for piece in pieces:
        text += piece
        yield _item(text, piece)


async def _apieces(pieces: list[str]) -> AsyncGenerator[ChatResponse, None]:
    for item in _pieces(pieces):
        yield item
