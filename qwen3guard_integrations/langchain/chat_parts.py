"""The pure parts of the guarded chat model: what a chunk holds, what is moderated, what is
released, and what the inner model's callbacks may keep.

No I/O here: `GuardedChatModel` plans with these, makes its one call to a guard, and applies
the result.
"""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage, HumanMessage
from langchain_core.tracers.base import BaseTracer

from .convert import EMPTY_USER, message_to_dict, text_of_content, tool_call_text

__all__ = [
    "NOSTREAM_TAG",
    "Conversation",
    "Outbox",
    "keeps_inner_events",
    "reasoning_text",
    "strip_tool_calls",
    "tool_call_text",
    "tool_call_texts",
]

#: LangGraph's tag for "do not stream this model run" (``langgraph.constants.TAG_NOSTREAM``).
NOSTREAM_TAG = "nostream"

#: Content blocks that carry tool calls (held back until the calls are checked).
_TOOL_BLOCKS = frozenset(
    {
        "tool_call",
        "tool_call_chunk",
        "invalid_tool_call",
        "server_tool_call",
        "server_tool_call_chunk",
        "function_call",
    }
)
#: Keys of ``additional_kwargs`` that carry a provider's raw tool-call deltas.
_TOOL_KWARGS = ("tool_calls", "function_call")

_THINK_OPEN = "<think>\n"
_THINK_CLOSE = "\n</think>\n\n"


def tool_call_texts(message: AIMessage | AIMessageChunk) -> list[str]:
    """The text of every tool call of ``message``, those whose arguments did not parse included
    (they never run, but their text is in the message)."""
    texts = [tool_call_text(c["name"], c["args"]) for c in message.tool_calls]
    texts += [
        tool_call_text(bad.get("name") or "unknown", bad.get("args") or "")
        for bad in message.invalid_tool_calls
    ]
    return texts


def reasoning_text(message: BaseMessage) -> str:
    """The reasoning a message carries: ``{"type": "reasoning"}`` / ``{"type": "thinking"}``
    content blocks and ``additional_kwargs["reasoning_content"]``."""
    parts: list[str] = []
    extra = message.additional_kwargs.get("reasoning_content")
    if isinstance(extra, str):
        parts.append(extra)
    content = message.content
    if isinstance(content, list):
        for block in content:
            if not isinstance(block, Mapping):
                continue
            kind = block.get("type")
            if kind == "reasoning":
                if isinstance(block.get("reasoning"), str):
                    parts.append(block["reasoning"])
                for item in block.get("summary") or ():
                    if isinstance(item, Mapping) and isinstance(item.get("text"), str):
                        parts.append(item["text"])
            elif kind == "thinking" and isinstance(block.get("thinking"), str):
                parts.append(block["thinking"])
    return "".join(parts)


def strip_tool_calls(chunk: AIMessageChunk) -> AIMessageChunk:
    """``chunk`` without its tool calls (fields, tool blocks, raw provider deltas) and without
    an end marker: what may be released before the calls are checked."""
    content: Any = chunk.content
    if isinstance(content, list):
        content = [
            b for b in content if not (isinstance(b, Mapping) and b.get("type") in _TOOL_BLOCKS)
        ]
    extra = {k: v for k, v in chunk.additional_kwargs.items() if k not in _TOOL_KWARGS}
    return chunk.model_copy(
        update={
            "content": content,
            "additional_kwargs": extra,
            "tool_call_chunks": [],
            "tool_calls": [],
            "invalid_tool_calls": [],
            "chunk_position": None,
        }
    )


def as_chunk(item: Any) -> AIMessageChunk:
    """A stream item of the inner model as an ``AIMessageChunk`` (a model that cannot stream
    yields its whole ``AIMessage``)."""
    if isinstance(item, AIMessageChunk):
        return item
    if isinstance(item, AIMessage):
        return AIMessageChunk(
            content=item.content,
            additional_kwargs=item.additional_kwargs,
            response_metadata=item.response_metadata,
            id=item.id,
            name=item.name,
            tool_call_chunks=cast(
                Any,
                [
                    {
                        "name": c["name"],
                        "args": json.dumps(c["args"]),
                        "id": c.get("id"),
                        "index": i,
                        "type": "tool_call_chunk",
                    }
                    for i, c in enumerate(item.tool_calls)
                ]
                + [
                    {
                        "name": b.get("name"),
                        "args": b.get("args"),
                        "id": b.get("id"),
                        "index": len(item.tool_calls) + i,
                        "type": "tool_call_chunk",
                    }
                    for i, b in enumerate(item.invalid_tool_calls)
                ],
            ),
            usage_metadata=item.usage_metadata,
        )
    if isinstance(item, str):
        return AIMessageChunk(content=item)
    raise TypeError(f"the guarded model's inner model streamed a {type(item).__name__}")


def keeps_inner_events(handler: BaseCallbackHandler) -> bool:
    """Whether ``handler`` may see the inner model's own run: tracers (LangSmith, console) do;
    stream consumers (LangGraph's ``messages`` mode, ``astream_events``, ``astream_log``) and
    user handlers do not, since that run carries unchecked tokens."""
    if not isinstance(handler, BaseTracer):
        return False
    streaming = getattr(handler, "tap_output_iter", None) or getattr(
        handler, "tap_output_aiter", None
    )
    return streaming is None


@dataclass(frozen=True)
class Conversation:
    """A chat model's input as the guards read it.

    Attributes:
        full: every message as a ``{"role", "content"}`` dict.
        ends_with_user: whether the last message is the user's (then the prompt is checked).
        until_user: the conversation up to its last user turn (a placeholder user turn when
            there is none): what a Stream session starts from and tool calls are judged after.
    """

    full: list[dict[str, Any]]
    ends_with_user: bool
    until_user: list[dict[str, Any]]

    @classmethod
    def of(cls, messages: Sequence[BaseMessage]) -> Conversation:
        full = [message_to_dict(m) for m in messages]
        last = max((i for i, m in enumerate(full) if m["role"] == "user"), default=None)
        until = full[: last + 1] if last is not None else [*full, dict(EMPTY_USER)]
        ends = bool(messages) and isinstance(messages[-1], HumanMessage)
        return cls(full, ends, until)

    @property
    def response_context(self) -> list[dict[str, Any]]:
        """What a response is judged after (a user turn is always there)."""
        if any(m["role"] == "user" for m in self.full):
            return self.full
        return self.until_user


@dataclass
class Outbox:
    """Reads the inner model's chunks for moderation and releases whole chunks once their text
    is cleared.

    ``read`` is the ``text_of`` of `HoldBack.run`: it returns the text to moderate (the visible
    text, and the reasoning in Qwen3's ``<think>`` form unless ``reasoning`` is False) and
    queues the chunk, without its tool calls, until that many characters are cleared. Chunks
    go out unchanged otherwise (content blocks, metadata, usage), byte for byte.
    """

    reasoning: bool = True
    fed: int = 0
    message_id: str | None = None
    chunks: list[AIMessageChunk] = field(default_factory=list)
    _texts: list[str] = field(default_factory=list)
    _pending: deque[tuple[int, AIMessageChunk]] = field(default_factory=deque)
    _in_think: bool = False
    _released: int = 0

    def read(self, item: Any) -> str:
        chunk = as_chunk(item)
        if self.message_id is None and chunk.id:
            self.message_id = chunk.id
        self.chunks.append(chunk)
        piece = self._moderated(chunk)
        self._texts.append(piece)
        self.fed += len(piece)
        self._pending.append((self.fed, strip_tool_calls(chunk)))
        return piece

    def _moderated(self, chunk: AIMessageChunk) -> str:
        parts: list[str] = []
        thought = reasoning_text(chunk) if self.reasoning else ""
        if thought:
            if not self._in_think:
                parts.append(_THINK_OPEN)
                self._in_think = True
            parts.append(thought)
        text = text_of_content(chunk.content)
        if text:
            if self._in_think:
                parts.append(_THINK_CLOSE)
                self._in_think = False
            parts.append(text)
        return "".join(parts)

    @property
    def moderated_text(self) -> str:
        """Everything fed to the guards so far (reasoning in ``<think>`` form, then the text)."""
        return "".join(self._texts)

    @property
    def released_any(self) -> bool:
        """Whether some text was released already."""
        return self._released > 0

    def take(self, cleared: int) -> list[AIMessageChunk]:
        """The queued chunks whose text lies within the first ``cleared`` characters."""
        out: list[AIMessageChunk] = []
        while self._pending and self._pending[0][0] <= cleared:
            end, chunk = self._pending.popleft()
            self._released = end
            out.append(self._stamped(chunk))
        return [c for c in out if _worth_sending(c)]

    def take_all(self) -> list[AIMessageChunk]:
        """Every queued chunk (the stream ended and was cleared)."""
        return self.take(self.fed)

    def drop(self) -> None:
        """Forget every queued chunk (the stream was blocked)."""
        self._pending.clear()

    def _stamped(self, chunk: AIMessageChunk) -> AIMessageChunk:
        if self.message_id is not None and chunk.id != self.message_id:
            chunk = chunk.model_copy(update={"id": self.message_id})
        return chunk

    def merged(self) -> AIMessageChunk | None:
        """Every chunk the inner model sent, merged (its tool calls parsed)."""
        if not self.chunks:
            return None
        merged = self.chunks[0]
        for c in self.chunks[1:]:
            merged = merged + c
        return merged


def _worth_sending(chunk: AIMessageChunk) -> bool:
    return bool(
        chunk.content
        or chunk.usage_metadata
        or chunk.additional_kwargs
        or {k: v for k, v in chunk.response_metadata.items() if k != "model_provider"}
    )
