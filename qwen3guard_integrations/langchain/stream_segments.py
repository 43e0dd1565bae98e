"""The pure half of `HoldBackStage`: a stream's items cut into segments, and the release of the
model's own items as the Stream head clears their text.

Each incoming item (a message chunk or a string) is cut into segments in the order the model
produced them: reasoning (``additional_kwargs["reasoning_content"]``, ``reasoning`` /
``thinking`` content blocks), text (a string content, ``text`` blocks) and other blocks
(images, ...). The text of reasoning and answer segments is moderated; other blocks carry no
text and go out at their place. The stage releases the model's *own* pieces (byte for byte,
each block in its own shape), never the guard's decoded re-tokenization of them: a segment
goes out once the decoded text the hold-back released reaches its end (its length measured as
its NFC form, which is what the Qwen3 tokenizer decodes to; composition across a boundary only
shortens the decoded text, so the estimate never runs ahead of what was cleared). A text that is
already NFC is released piecewise as it is cleared; one that is not waits for its whole.

After the last item, the message's tool calls (arguments as JSON, calls that did not parse
included) are moderated as a tail of the answer before they are released in the last chunk.
"""

from __future__ import annotations

import unicodedata
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from langchain_core.messages import AIMessageChunk, BaseMessage

from ..core.errors import InvalidInputError
from ..core.verdict import Verdict
from ..guards.holdback import Release
from .convert import block_reasoning, tool_calls_text
from .reporting import with_verdicts

__all__ = ["TAIL", "StreamRelease"]

#: The item that follows a stream's last one: its tool calls are moderated there.
TAIL = object()

_SEPARATOR = "\n\n"  # between reasoning and answer, and before the tool calls
# one segment to be: its kind, its text, how to release it, whether it may go out piecewise
_Part = tuple[str, str, Callable[[str], Any], bool]


@dataclass
class _Segment:
    """A piece of the model's output: ``text`` is moderated, ``build`` makes the output item."""

    text: str
    build: Callable[[str], Any] | None  # None: nothing to release (a separator, the tool calls)
    start: int
    end: int
    splittable: bool
    sent: int = 0


class StreamRelease:
    """The state of one moderated stream (see the module docstring): `text_of` reads each item
    for `HoldBack.run`, `apply` turns each `Release` into the items to yield."""

    def __init__(
        self,
        name: str,
        extra: Mapping[str, Verdict],
        safe: Callable[[], Verdict],
        ending: Callable[[Verdict], str],
        *,
        text: bool = False,
    ) -> None:
        self.name = name
        self.text = text  # whether the verdicts in the metadata keep the flagged text
        self.extra = dict(extra)
        self._safe = safe  # the verdict of a stream that ends unblocked
        self._ending = ending  # the text that ends a blocked stream, from its verdict
        self.kind: Literal["message", "str"] | None = None
        self.merged: AIMessageChunk | None = None  # the non-text parts, released at the end
        self.verdict: Verdict | None = None
        self.blocked = False
        self._pending: deque[_Segment] = deque()
        self._total = 0  # estimated decoded length of everything fed
        self._cleared = 0  # decoded length the hold-back released
        self._last_kind = ""

    # --- reading the items ---------------------------------------------------------------------
    def text_of(self, item: Any) -> str | None:
        """Cut ``item`` into segments (queued for release); return the text to moderate."""
        parts = self._tail() if item is TAIL else self._parts(item)
        text = ""
        for kind, piece, build, split in parts:
            if kind != self._last_kind and {kind, self._last_kind} == {"reasoning", "text"}:
                text += self._add(_SEPARATOR, None, False)
            self._last_kind = kind
            text += self._add(piece, build, split)
        return text or None

    def _add(self, text: str, build: Callable[[str], Any] | None, split: bool) -> str:
        start = self._total
        self._total += len(unicodedata.normalize("NFC", text))
        split = split and unicodedata.is_normalized("NFC", text)
        self._pending.append(_Segment(text, build, start, self._total, split))
        return text

    def _parts(self, item: Any) -> list[_Part]:
        if isinstance(item, str):
            self._kind("str")
            return [("text", item, _same, True)] if item else []
        if not isinstance(item, BaseMessage):
            raise InvalidInputError(
                f"{self.name} takes message chunks or strings, not {type(item).__name__}"
            )
        self._kind("message")
        chunk = _as_chunk(item)
        cid = chunk.id
        extra = dict(chunk.additional_kwargs)
        parts: list[_Part] = []
        reasoning = extra.pop("reasoning_content", None)
        if isinstance(reasoning, str) and reasoning:
            parts.append(("reasoning", reasoning, _kwarg_reasoning(cid), True))
        content = chunk.content
        if isinstance(content, str):
            if content:
                parts.append(("text", content, _text(cid), True))
        else:
            parts += [_block_part(block, cid) for block in content]
        rest = chunk.model_copy(update={"content": "", "additional_kwargs": extra})
        self.merged = rest if self.merged is None else self.merged + rest
        return parts

    def _tail(self) -> list[_Part]:
        calls = tool_calls_text(self.merged) if self.merged is not None else ""
        return [("tools", _SEPARATOR + calls, _nothing, False)] if calls else []

    def _kind(self, kind: Literal["message", "str"]) -> None:
        if self.kind is None:
            self.kind = kind
        elif self.kind != kind:
            raise InvalidInputError(f"{self.name} got strings and messages in one stream")

    # --- releasing -----------------------------------------------------------------------------
    def apply(self, rel: Release) -> list[Any]:
        """The items one release lets out (the last one after a block or the end)."""
        if rel.blocked:
            self.blocked, self.verdict = True, rel.verdict
            return self._blocked_last() if rel.done else []
        # measured like the segments (NFC), whether the hold-back hands on decoded or source text
        self._cleared += len(unicodedata.normalize("NFC", rel.text))
        out = self._take(final=rel.done)
        if rel.done:
            self.verdict = self._safe()
            out += self._last()
        return [o for o in out if o is not None]

    def _take(self, *, final: bool) -> list[Any]:
        out: list[Any] = []
        while self._pending:
            seg = self._pending[0]
            if final or seg.end <= self._cleared:
                self._pending.popleft()
                if seg.build is not None and (seg.sent < len(seg.text) or not seg.text):
                    out.append(seg.build(seg.text[seg.sent :]))
                continue
            cut = self._cleared - seg.start
            if seg.splittable and seg.build is not None and cut > seg.sent:
                out.append(seg.build(seg.text[seg.sent : cut]))
                seg.sent = cut
            break
        return out

    def _verdicts(self) -> dict[str, Verdict]:
        assert self.verdict is not None
        return {**self.extra, "stream": self.verdict}

    def _last(self) -> list[Any]:
        if self.kind == "str":
            return []
        base = self.merged if self.merged is not None else AIMessageChunk(content="")
        last = base.model_copy(update={"chunk_position": "last"})
        return [with_verdicts(last, self._verdicts(), text=self.text)]

    def _blocked_last(self) -> list[Any]:
        assert self.verdict is not None
        text = self._ending(self.verdict)
        if self.kind == "str":
            return [text] if text else []
        cid = self.merged.id if self.merged is not None else None
        last = AIMessageChunk(content=text, id=cid, chunk_position="last")
        return [with_verdicts(last, self._verdicts(), text=self.text)]


def _as_chunk(message: BaseMessage) -> AIMessageChunk:
    if isinstance(message, AIMessageChunk):
        return message
    return AIMessageChunk(
        content=message.content,
        id=message.id,
        additional_kwargs=message.additional_kwargs,
        response_metadata=message.response_metadata,
        tool_calls=getattr(message, "tool_calls", []),
        invalid_tool_calls=getattr(message, "invalid_tool_calls", []),
        usage_metadata=getattr(message, "usage_metadata", None),
    )


def _block_part(block: Any, cid: str | None) -> _Part:
    """One content block: (kind, text to moderate, how to release it)."""
    if isinstance(block, str):
        return "text", block, _text(cid), True
    if isinstance(block, Mapping):
        if block.get("type") == "text" and isinstance(block.get("text"), str):
            return "text", block["text"], _text_block(block, cid), True
        reasoning = block_reasoning(block)
        if reasoning is not None:
            return "reasoning", reasoning, _whole(block, cid), False
    return "whole", "", _whole(block, cid), False


def _same(text: str) -> str:
    return text


def _nothing(text: str) -> None:
    return None


def _text(cid: str | None) -> Callable[[str], Any]:
    return lambda text: AIMessageChunk(content=text, id=cid)


def _text_block(block: Mapping[str, Any], cid: str | None) -> Callable[[str], Any]:
    return lambda text: AIMessageChunk(content=[{**block, "text": text}], id=cid)


def _whole(block: Any, cid: str | None) -> Callable[[str], Any]:
    return lambda text: AIMessageChunk(content=[block], id=cid)


def _kwarg_reasoning(cid: str | None) -> Callable[[str], Any]:
    return lambda text: AIMessageChunk(
        content="", additional_kwargs={"reasoning_content": text}, id=cid
    )
