"""``StreamGuard``: an LCEL stage after a chat model that releases only text the Stream head cleared.

```python
chain = prompt | model | StreamGuard(stream_guard)
for chunk in chain.stream({"topic": "..."}):
    print(chunk.content, end="")
```

Each incoming chunk's text is fed to a Stream session through a
`HoldBack`: text comes out once every
token in it is moderated and no later trip can include it (at most the debounce window, plus a word
the re-tokenizer still holds, behind the model). When the debounced decision blocks, nothing more
is released: the stage stops reading the model (so it stops generating) and ends the stream with
a final chunk carrying the verdict in ``response_metadata["qwen3guard"]["stream"]``
(``on_block="end"``, the default), or raises
`UnsafeContentError` (``on_block="raise"``). An unblocked stream
ends with a chunk carrying the verdict (Safe, or a trip the policy allows), the text still held and
any tool-call chunks, usage and metadata the model sent (released only at the end: tool-call
arguments are not moderated by the Stream head; check them with `Qwen3GuardMiddleware`).

Output chunks have the input's kind: ``AIMessageChunk`` for messages, ``str`` for strings (a
string stream cannot carry metadata: its verdict is in the custom event only). A stage after the
model does not see the prompt; `guard_chain` gives it the prompt, standalone it moderates the
response after a neutral placeholder user turn.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator, Iterator
from typing import Any, Literal

from langchain_core.callbacks import AsyncCallbackManagerForChainRun, CallbackManagerForChainRun
from langchain_core.messages import AIMessageChunk, BaseMessage, message_chunk_to_message
from langchain_core.runnables import Runnable, RunnableConfig

from ..core.errors import InvalidInputError, UnsafeContentError
from ..core.labels import Level, Role
from ..core.verdict import Verdict
from ..guards.holdback import HoldBack, Release
from ..guards.stream import Qwen3StreamGuard
from .reporting import adispatch_verdict, dispatch_verdict, with_verdicts

__all__ = ["NO_PROMPT", "StreamGuard"]

#: The user turn a standalone stage moderates the response after (it does not see the prompt).
NO_PROMPT = "(the user's request is not available)"


class _Out:
    """Builds output chunks of the input's kind and gathers what is released at the end."""

    def __init__(self) -> None:
        self.kind: Literal["message", "str"] | None = None
        self.merged: AIMessageChunk | None = None

    def text_of(self, chunk: Any) -> str:
        if isinstance(chunk, str):
            kind: Literal["message", "str"] = "str"
            text = chunk
        elif isinstance(chunk, BaseMessage):
            kind = "message"
            text = chunk.text
            piece = (
                chunk
                if isinstance(chunk, AIMessageChunk)
                else AIMessageChunk(
                    content=chunk.content,
                    id=chunk.id,
                    response_metadata=chunk.response_metadata,
                    tool_calls=getattr(chunk, "tool_calls", []),
                    usage_metadata=getattr(chunk, "usage_metadata", None),
                )
            )
            # the non-text parts go out at the end: keep them, without their text
            rest = piece.model_copy(update={"content": ""})
            self.merged = rest if self.merged is None else self.merged + rest
        else:
            raise InvalidInputError(
                f"StreamGuard takes message chunks or strings, not {type(chunk).__name__}"
            )
        if self.kind is None:
            self.kind = kind
        elif self.kind != kind:
            raise InvalidInputError("StreamGuard got strings and messages in one stream")
        return text

    def piece(self, text: str) -> Any:
        if self.kind == "str":
            return text
        return AIMessageChunk(content=text, id=self.merged.id if self.merged else None)

    def last(self, text: str, verdicts: dict[str, Verdict]) -> Any:
        if self.kind == "str":
            return text or None
        base = self.merged if self.merged is not None else AIMessageChunk(content="")
        return with_verdicts(
            base.model_copy(update={"content": text, "chunk_position": "last"}), verdicts
        )

    def blocked_last(self, verdicts: dict[str, Verdict]) -> Any:
        if self.kind == "str":
            return None
        mid = self.merged.id if self.merged else None
        return with_verdicts(AIMessageChunk(content="", id=mid, chunk_position="last"), verdicts)


class StreamGuard(Runnable[Any, Any]):
    """Hold-back stream moderation stage; see the module docstring.

    Args:
        stream_guard: the `Qwen3StreamGuard`.
        on_block: ``"end"`` the stream with a final chunk carrying the verdict, or ``"raise"``.
        name: the run name (default ``"StreamGuard"``).
    """

    def __init__(
        self,
        stream_guard: Qwen3StreamGuard,
        *,
        on_block: Literal["end", "raise"] = "end",
        name: str | None = None,
    ) -> None:
        if on_block not in ("end", "raise"):
            raise InvalidInputError(f"on_block must be 'end' or 'raise', got {on_block!r}")
        self.stream_guard = stream_guard
        self.on_block = on_block
        self.name = name or "StreamGuard"

    # --- the moderation loop (guard_chain calls these with the real prompt) ------------------
    def _final_verdict(self, session: Any) -> Verdict:
        if session.verdict is not None:
            return session.verdict
        return Verdict(
            level=Level.SAFE,
            role=Role.RESPONSE,
            model=session.prompt_verdict.model,
            backend=session.prompt_verdict.backend,
        )

    def _released(self, rel: Release, out: _Out, extra: dict[str, Verdict]) -> list[Any]:
        """The chunks one release lets out (on a block with ``on_block="end"``: the last one)."""
        items = [out.piece(rel.text)] if rel.text else []
        if rel.blocked and self.on_block == "end":
            assert rel.verdict is not None
            last = out.blocked_last({**extra, "stream": rel.verdict})
            items += [last] if last is not None else []
        return items

    def _ended(self, session: Any, rel: Release, out: _Out, extra: dict[str, Verdict]) -> Any:
        """The last chunk of an unblocked stream (None for an empty string tail)."""
        return out.last(rel.text, {**extra, "stream": self._final_verdict(session)})

    def _moderate(
        self,
        session: Any,
        chunks: Iterator[Any],
        config: RunnableConfig,
        extra: dict[str, Verdict] | None = None,
    ) -> Iterator[Any]:
        extra = extra or {}
        hold, out = HoldBack(session), _Out()
        try:
            rel: Release | None = None
            for chunk in chunks:
                if text := out.text_of(chunk):
                    rel = hold.push(text)
                    yield from self._released(rel, out, extra)
                    if rel.blocked:
                        break
            if rel is None or not rel.blocked:
                rel = hold.finish()
                if not rel.blocked:
                    dispatch_verdict("stream", self._final_verdict(session), False, config)
                    last = self._ended(session, rel, out, extra)
                    if last is not None:
                        yield last
                    return
                yield from self._released(rel, out, extra)
            assert rel.verdict is not None
            dispatch_verdict("stream", rel.verdict, True, config)
            if self.on_block == "raise":
                raise UnsafeContentError(rel.verdict)
        finally:
            session.close()

    async def _amoderate(
        self,
        session: Any,
        chunks: AsyncIterator[Any],
        config: RunnableConfig,
        extra: dict[str, Verdict] | None = None,
    ) -> AsyncGenerator[Any, None]:
        extra = extra or {}
        hold, out = HoldBack(session), _Out()
        try:
            rel: Release | None = None
            async for chunk in chunks:
                if text := out.text_of(chunk):
                    rel = await hold.apush(text)
                    for item in self._released(rel, out, extra):
                        yield item
                    if rel.blocked:
                        break
            if rel is None or not rel.blocked:
                rel = await hold.afinish()
                if not rel.blocked:
                    verdict = self._final_verdict(session)
                    await adispatch_verdict("stream", verdict, False, config)
                    last = self._ended(session, rel, out, extra)
                    if last is not None:
                        yield last
                    return
                for item in self._released(rel, out, extra):
                    yield item
            assert rel.verdict is not None
            await adispatch_verdict("stream", rel.verdict, True, config)
            if self.on_block == "raise":
                raise UnsafeContentError(rel.verdict)
        finally:
            await asyncio.to_thread(session.close)

    # --- Runnable -----------------------------------------------------------------------------
    def _open(self, convo: Any = None) -> Any:
        return self.stream_guard.session(convo or NO_PROMPT)

    def _transform(
        self, chunks: Iterator[Any], run_manager: CallbackManagerForChainRun, config: RunnableConfig
    ) -> Iterator[Any]:
        yield from self._moderate(self._open(), chunks, config)

    async def _atransform(
        self,
        chunks: AsyncIterator[Any],
        run_manager: AsyncCallbackManagerForChainRun,
        config: RunnableConfig,
    ) -> AsyncIterator[Any]:
        session = await asyncio.to_thread(self._open)
        async for item in self._amoderate(session, chunks, config):
            yield item

    def transform(
        self, input: Iterator[Any], config: RunnableConfig | None = None, **kwargs: Any
    ) -> Iterator[Any]:
        """Moderate a stream of chunks, releasing only cleared text."""
        yield from self._transform_stream_with_config(input, self._transform, config, **kwargs)

    async def atransform(
        self, input: AsyncIterator[Any], config: RunnableConfig | None = None, **kwargs: Any
    ) -> AsyncIterator[Any]:
        """Async twin of `transform`."""
        async for item in self._atransform_stream_with_config(
            input, self._atransform, config, **kwargs
        ):
            yield item

    def stream(
        self, input: Any, config: RunnableConfig | None = None, **kwargs: Any
    ) -> Iterator[Any]:
        """Moderate one message or string as a one-chunk stream."""
        yield from self.transform(iter([input]), config, **kwargs)

    async def astream(
        self, input: Any, config: RunnableConfig | None = None, **kwargs: Any
    ) -> AsyncIterator[Any]:
        """Async twin of `stream`."""

        async def one() -> AsyncIterator[Any]:
            yield input

        async for item in self.atransform(one(), config, **kwargs):
            yield item

    def invoke(self, input: Any, config: RunnableConfig | None = None, **kwargs: Any) -> Any:
        """Moderate a whole message or string; return what is released, joined (a message
        carries the verdict in its metadata)."""
        return _join(list(self.stream(input, config, **kwargs)))

    async def ainvoke(self, input: Any, config: RunnableConfig | None = None, **kwargs: Any) -> Any:
        """Async twin of `invoke`."""
        return _join([item async for item in self.astream(input, config, **kwargs)])


def _join(items: list[Any]) -> Any:
    if not items:
        return ""
    if all(isinstance(i, str) for i in items):
        return "".join(items)
    merged = items[0]
    for item in items[1:]:
        merged = merged + item
    return message_chunk_to_message(merged)
