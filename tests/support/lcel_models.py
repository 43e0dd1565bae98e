"""Chat models for the LCEL tests: real ``BaseChatModel`` subclasses that stream scripted chunks
and count how many chunks they generated (so a test can see whether a stream was drained)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from langchain_core.language_models.chat_models import BaseChatModel
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessageChunk, BaseMessage, message_chunk_to_message
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from pydantic import Field

__all__ = ["CountingChatModel", "ScriptedChatModel"]


class CountingChatModel(GenericFakeChatModel):
    """`GenericFakeChatModel` (each answer streams word by word) that counts the chunks it
    generated in ``generated[0]``."""

    generated: list[int] = Field(default_factory=lambda: [0])

    def _stream(self, *args: Any, **kwargs: Any) -> Iterator[ChatGenerationChunk]:
        for chunk in super()._stream(*args, **kwargs):
            self.generated[0] += 1
            yield chunk


class ScriptedChatModel(BaseChatModel):
    """Streams exactly ``chunks`` (reasoning and image blocks, tool-call chunks, ...), counting
    them in ``generated[0]``; ``invoke`` returns them merged."""

    chunks: list[AIMessageChunk]
    generated: list[int] = Field(default_factory=lambda: [0])

    @property
    def _llm_type(self) -> str:
        return "scripted"

    def _generate(
        self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None, **kw: Any
    ) -> ChatResult:
        merged = self.chunks[0]
        for chunk in self.chunks[1:]:
            merged = merged + chunk
        return ChatResult(generations=[ChatGeneration(message=message_chunk_to_message(merged))])

    def _stream(
        self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None, **kw: Any
    ) -> Iterator[ChatGenerationChunk]:
        for chunk in self.chunks:
            self.generated[0] += 1
            yield ChatGenerationChunk(message=chunk)
