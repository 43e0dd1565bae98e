"""The LLM a guarded chat engine talks to: every output is checked before the engine sees it.

`GuardedLLM` wraps the chat engine's own LLM for one turn. It is the one place the model's
output is released to the engine: a whole answer (``chat`` / ``complete``) is checked with the
Gen guard before it is returned; a stream (``stream_chat`` / ``stream_complete`` and their async
twins) goes through `release` / `arelease`, so the engine, its memory writer, its
``StreamChatDeltaReceivedEvent`` events and its consumer only ever get cleared text, and the LLM's
generator is closed at the block. After a block a stream ends with the refusal piece (so that
the engine's memory records what a refused stream shows, never the blocked text), and every
later call of the turn raises `UnsafeContentError`.

Only text is released: tool calls and extra fields of the streamed items are not passed on.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Callable, Generator, Sequence
from typing import Any

from llama_index.core.base.llms.types import (
    ChatMessage,
    ChatResponse,
    ChatResponseAsyncGen,
    ChatResponseGen,
    CompletionResponse,
    CompletionResponseAsyncGen,
    CompletionResponseGen,
    LLMMetadata,
    MessageRole,
)
from llama_index.core.bridge.pydantic import Field, PrivateAttr
from llama_index.core.llms.llm import LLM

from .answer import GuardedAnswer
from .events import aemit, emit
from .streaming import arelease, release

__all__ = ["GuardedLLM"]

_Item = ChatResponse | CompletionResponse
_Build = Callable[[str, str], Any]  # (text so far, new piece) -> a stream item


def _chat_item(text: str, piece: str) -> ChatResponse:
    return ChatResponse(message=ChatMessage(role=MessageRole.ASSISTANT, content=text), delta=piece)


def _completion_item(text: str, piece: str) -> CompletionResponse:
    return CompletionResponse(text=text, delta=piece)


class _Delta:
    """Reads the new text of a stream item: its ``delta``, else what its text grew by."""

    def __init__(self) -> None:
        self._seen = ""

    def __call__(self, item: _Item) -> str:
        if item.delta is not None:
            return item.delta
        text = (item.message.content if isinstance(item, ChatResponse) else item.text) or ""
        new = text[len(self._seen) :] if text.startswith(self._seen) else text
        self._seen = text
        return new


class GuardedLLM(LLM):
    """Wraps ``inner`` for one guarded turn (`GuardedAnswer`); see the module docstring.

    The prompt settings (``system_prompt``, ``messages_to_prompt``, ``completion_to_prompt``,
    ``output_parser``, ...) are the inner LLM's, so prompts are formatted exactly as before.
    """

    inner: LLM = Field(exclude=True, description="The LLM whose outputs are checked.")
    _answer: GuardedAnswer = PrivateAttr()

    def __init__(self, inner: LLM, answer: GuardedAnswer) -> None:
        super().__init__(
            inner=inner,
            callback_manager=inner.callback_manager,
            system_prompt=inner.system_prompt,
            messages_to_prompt=inner.messages_to_prompt,
            completion_to_prompt=inner.completion_to_prompt,
            output_parser=inner.output_parser,
            pydantic_program_mode=inner.pydantic_program_mode,
            query_wrapper_prompt=inner.query_wrapper_prompt,
        )  # type: ignore[call-arg]
        self._answer = answer

    @classmethod
    def class_name(cls) -> str:
        """The class name LlamaIndex serialises."""
        return "Qwen3GuardedLLM"

    @property
    def metadata(self) -> LLMMetadata:
        """The inner LLM's metadata."""
        return self.inner.metadata

    # -- whole outputs -------------------------------------------------------------------------
    def _open(self) -> GuardedAnswer:
        """The turn's answer; a turn already blocked makes no more LLM calls."""
        if self._answer.blocked_by is not None:
            raise self._answer.error()
        return self._answer

    def _check(self, text: str | None) -> None:
        answer = self._open()
        if text and text.strip():
            verdict = answer.guard.check_response(answer.query, text)
            emit(answer.event(verdict, answer.guard.blocks(verdict), "response"))
            self._open()

    async def _acheck(self, text: str | None) -> None:
        answer = self._open()
        if text and text.strip():
            verdict = await answer.guard.acheck_response(answer.query, text)
            await aemit(answer.event(verdict, answer.guard.blocks(verdict), "response"))
            self._open()

    def chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        """The inner answer, once checked (`UnsafeContentError` when blocked)."""
        self._open()
        response = self.inner.chat(messages, **kwargs)
        self._check(response.message.content)
        return response

    def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        """The inner completion, once checked."""
        self._open()
        response = self.inner.complete(prompt, formatted=formatted, **kwargs)
        self._check(response.text)
        return response

    async def achat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        """Async twin of `chat`."""
        self._open()
        response = await self.inner.achat(messages, **kwargs)
        await self._acheck(response.message.content)
        return response

    async def acomplete(
        self, prompt: str, formatted: bool = False, **kwargs: Any
    ) -> CompletionResponse:
        """Async twin of `complete`."""
        self._open()
        response = await self.inner.acomplete(prompt, formatted=formatted, **kwargs)
        await self._acheck(response.text)
        return response

    # -- streams -------------------------------------------------------------------------------
    def stream_chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponseGen:
        """The inner stream, released as the guards clear it."""
        self._open()
        return self._guarded(self.inner.stream_chat(messages, **kwargs), _chat_item)

    def stream_complete(
        self, prompt: str, formatted: bool = False, **kwargs: Any
    ) -> CompletionResponseGen:
        """The inner completion stream, released as the guards clear it."""
        self._open()
        items = self.inner.stream_complete(prompt, formatted=formatted, **kwargs)
        return self._guarded(items, _completion_item)

    async def astream_chat(
        self, messages: Sequence[ChatMessage], **kwargs: Any
    ) -> ChatResponseAsyncGen:
        """Async twin of `stream_chat`."""
        self._open()
        return self._aguarded(await self.inner.astream_chat(messages, **kwargs), _chat_item)

    async def astream_complete(
        self, prompt: str, formatted: bool = False, **kwargs: Any
    ) -> CompletionResponseAsyncGen:
        """Async twin of `stream_complete`."""
        self._open()
        items = await self.inner.astream_complete(prompt, formatted=formatted, **kwargs)
        return self._aguarded(items, _completion_item)

    def _guarded(self, items: Any, build: _Build) -> Generator[Any, None, None]:
        answer = self._answer
        answer.released = ""  # what this stream released (a turn may stream more than once)
        text = ""
        for piece in release(items, answer, text_of=_Delta()):
            text += piece
            yield build(text, piece)
        for piece in self._ending():
            text += piece
            yield build(text, piece)

    async def _aguarded(self, items: Any, build: _Build) -> AsyncGenerator[Any, None]:
        answer = self._answer
        answer.released = ""
        text = ""
        async for piece in arelease(items, answer, text_of=_Delta()):
            text += piece
            yield build(text, piece)
        for piece in self._ending():
            text += piece
            yield build(text, piece)

    def _ending(self) -> list[str]:
        """After a block, the refusal piece: what the engine's memory writer records."""
        if self._answer.blocked_by is None:
            return []
        piece = self._answer.refusal_piece()
        return [piece] if piece else []
