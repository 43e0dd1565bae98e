"""``HoldBackStage``: an LCEL stage after a chat model that releases only what the Stream head
cleared.

```python
chain = prompt | model | HoldBackStage(stream_guard)
for chunk in chain.stream({"topic": "..."}):
    print(chunk.content, end="")
```

The model's stream goes through `HoldBack.run` / `HoldBack.arun` (the one hold-back loop,
`qwen3guard_integrations.guards.holdback`): a piece comes out once every token of it is
moderated and no later trip can include it (at most the debounce window, plus a word the
re-tokenizer still holds, behind the model). What comes out is the model's own output, byte for
byte: text, reasoning (moderated like the answer) and other content blocks (images, ...) in
their place and shape (see `qwen3guard_integrations.langchain.stream_segments`). Tool calls,
usage and metadata go out in the last chunk, after the tool calls' arguments were moderated as
the tail of the answer.

When the debounced decision blocks, nothing more is released and the model's stream is closed
at once (it stops generating; langchain-core does not drain it into its traces). The stage then
ends the stream with a last chunk carrying the verdict in
``response_metadata["qwen3guard"]["stream"]`` and the ``refusal`` text if one is given
(``on_block="refuse"``, the default), or raises `UnsafeContentError` (``on_block="raise"``).
An unblocked stream ends with a chunk carrying the verdict (Safe, or a trip the policy allows).

Output chunks have the input's kind: ``AIMessageChunk`` for messages, ``str`` for strings (a
string stream cannot carry metadata: its verdict is in the custom event only). A stage after the
model does not see the prompt; `guard_chain` gives it the prompt, standalone it moderates the
response after a neutral placeholder user turn.

``StreamGuard`` is the deprecated name of this stage (``on_block="end"`` the deprecated
spelling of ``"refuse"``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from typing import Any

from langchain_core.messages import message_chunk_to_message
from langchain_core.runnables import Runnable, RunnableConfig

from ..core.actions import BlockAction, check_refusal, render_refusal
from ..core.errors import UnsafeContentError
from ..core.labels import Level, Role
from ..core.verdict import Verdict
from ..guards.holdback import HoldBack
from ..guards.session import AsyncStreamSession, StreamSession
from ..guards.stream import Qwen3StreamGuard
from .options import block_action, deprecated_names, require_stream_guard
from .reporting import adispatch_verdict, dispatch_verdict
from .stream_segments import TAIL, StreamRelease

__all__ = ["NO_PROMPT", "HoldBackStage"]

#: The user turn a standalone stage moderates the response after (it does not see the prompt).
NO_PROMPT = "(the user's request is not available)"

_ACTIONS = (BlockAction.RAISE, BlockAction.REFUSE)
_LEGACY = {"end": BlockAction.REFUSE}


class HoldBackStage(Runnable[Any, Any]):
    """Hold-back stream moderation stage; see the module docstring.

    Args:
        stream_guard: the `Qwen3StreamGuard`.
        on_block: ``"refuse"``: end the stream with a last chunk carrying the verdict (and
            ``refusal``), or ``"raise"`` `UnsafeContentError`.
        refusal: the text of that last chunk (a template: ``{level}``, ``{categories}``,
            ``{stage}``); None (the default) ends with an empty chunk.
        name: the run name (default ``"HoldBackStage"``).
        metadata_text: keep the flagged text (``text_until``) in the verdicts attached to the
            last chunk; off by default, since that metadata reaches every consumer (a chat UI).
            The verdict events keep the text for audit.

    Raises:
        ConfigurationError: ``stream_guard`` is not a Stream guard, or an option is not valid.
    """

    _warn_legacy = True

    def __init__(
        self,
        stream_guard: Qwen3StreamGuard,
        *,
        on_block: BlockAction | str = BlockAction.REFUSE,
        refusal: str | None = None,
        name: str | None = None,
        metadata_text: bool = False,
    ) -> None:
        require_stream_guard(stream_guard, type(self).__name__)
        self.metadata_text = bool(metadata_text)
        self.stream_guard = stream_guard
        self.on_block = block_action(on_block, _ACTIONS, legacy=_LEGACY, warn=self._warn_legacy)
        self.refusal = None if refusal is None else check_refusal(refusal)
        self.name = name or type(self).__name__

    # --- the moderation (guard_chain calls these with the real prompt) -----------------------
    def _final_verdict(self, session: StreamSession | AsyncStreamSession) -> Verdict:
        if session.verdict is not None:
            return session.verdict
        return Verdict(
            level=Level.SAFE,
            role=Role.RESPONSE,
            model=session.prompt_verdict.model,
            backend=session.prompt_verdict.backend,
        )

    def _release(
        self, session: StreamSession | AsyncStreamSession, extra: Mapping[str, Verdict] | None
    ) -> StreamRelease:
        return StreamRelease(
            self.get_name(),
            extra or {},
            lambda: self._final_verdict(session),
            self._ending,
            text=self.metadata_text,
        )

    def _ending(self, verdict: Verdict) -> str:
        """The text of the last chunk of a blocked stream."""
        return "" if self.refusal is None else render_refusal(self.refusal, verdict, stage="answer")

    def _outcome(self, state: StreamRelease) -> tuple[Verdict, bool]:
        """The verdict to report, and whether it blocked."""
        assert state.verdict is not None
        return state.verdict, state.blocked

    def _raise_if_blocked(self, state: StreamRelease) -> None:
        if state.blocked and self.on_block is BlockAction.RAISE:
            assert state.verdict is not None
            raise UnsafeContentError(state.verdict)

    def _moderate(
        self,
        session: StreamSession,
        chunks: Iterator[Any],
        config: RunnableConfig,
        extra: Mapping[str, Verdict] | None = None,
        upstream: _Upstream | None = None,
    ) -> Iterator[Any]:
        state = self._release(session, extra)
        try:
            for rel in HoldBack(session).run(_Feed(chunks, upstream), text_of=state.text_of):
                yield from state.apply(rel)
        finally:
            session.close()
        dispatch_verdict("stream", *self._outcome(state), config)
        self._raise_if_blocked(state)

    async def _amoderate(
        self,
        session: StreamSession | AsyncStreamSession,
        chunks: AsyncIterator[Any],
        config: RunnableConfig,
        extra: Mapping[str, Verdict] | None = None,
        upstream: _Upstream | None = None,
    ) -> AsyncIterator[Any]:
        asession = await _started(session)
        state = self._release(asession, extra)
        try:
            async for rel in HoldBack(asession).arun(
                _Feed(chunks, upstream), text_of=state.text_of
            ):
                for item in state.apply(rel):
                    yield item
        finally:
            await asession.aclose()
        await adispatch_verdict("stream", *self._outcome(state), config)
        self._raise_if_blocked(state)

    # --- Runnable -----------------------------------------------------------------------------
    def _open(self, convo: Any = None) -> StreamSession:
        """The session of a standalone stream (`HoldBackStage` does not see the prompt)."""
        session: StreamSession = self.stream_guard.session(convo or NO_PROMPT)
        return session

    def _aopen(self, convo: Any = None) -> AsyncStreamSession:
        """Async twin of `_open` (not started yet): the same `_open`, run in a worker thread
        when the async session starts, so both paths open sessions in one place."""
        return AsyncStreamSession(lambda: self._open(convo))

    def transform(
        self, input: Iterator[Any], config: RunnableConfig | None = None, **kwargs: Any
    ) -> Iterator[Any]:
        """Moderate a stream of chunks, releasing only cleared output."""
        upstream = _Upstream(input)

        def moderate(
            chunks: Iterator[Any], run_manager: Any, config: RunnableConfig
        ) -> Iterator[Any]:
            yield from self._moderate(self._open(), chunks, config, None, upstream)

        inner = self._transform_stream_with_config(upstream, moderate, config, **kwargs)
        try:
            for item in inner:  # noqa: UP028 (yield from would hand the close on first)
                yield item
        finally:  # a consumer that stopped early: stop the model before langchain-core drains it
            upstream.close()
            _call(inner, "close")

    async def atransform(
        self, input: AsyncIterator[Any], config: RunnableConfig | None = None, **kwargs: Any
    ) -> AsyncIterator[Any]:
        """Async twin of `transform` (the session is an `AsyncStreamSession`)."""
        upstream = _Upstream(input)

        def moderate(
            chunks: AsyncIterator[Any], run_manager: Any, config: RunnableConfig
        ) -> AsyncIterator[Any]:
            return self._amoderate(self._aopen(), chunks, config, None, upstream)

        # (an async consumer that stops early closes the chain, and langchain-core does not drain
        # the model's stream on that path: nothing to stop here)
        async for item in self._atransform_stream_with_config(upstream, moderate, config, **kwargs):
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


class _StreamGuard(HoldBackStage):
    """The deprecated ``StreamGuard``: `HoldBackStage` under its old name (and run name), taking
    ``on_block="end"`` without a warning of its own."""

    _warn_legacy = False

    def __init__(
        self,
        stream_guard: Qwen3StreamGuard,
        *,
        on_block: BlockAction | str = "end",
        refusal: str | None = None,
        name: str | None = None,
    ) -> None:
        super().__init__(
            stream_guard, on_block=on_block, refusal=refusal, name=name or "StreamGuard"
        )


_StreamGuard.__name__ = _StreamGuard.__qualname__ = "StreamGuard"

__getattr__ = deprecated_names(
    __name__,
    {"StreamGuard": ("qwen3guard_integrations.langchain.HoldBackStage", lambda: _StreamGuard)},
)


class _Upstream:
    """The model's stream (sync or async), stoppable: once `close` / `aclose` ran it is closed
    and reads as ended, so nothing drains it after a block."""

    def __init__(self, source: Any) -> None:
        self._source = source
        self._stopped = False

    def __iter__(self) -> _Upstream:
        return self

    def __next__(self) -> Any:
        if self._stopped:
            raise StopIteration
        return next(self._source)

    def __aiter__(self) -> _Upstream:
        return self

    async def __anext__(self) -> Any:
        if self._stopped:
            raise StopAsyncIteration
        return await anext(self._source)

    def close(self) -> None:
        self._stopped = True
        _call(self._source, "close")

    async def aclose(self) -> None:
        self._stopped = True
        await _aclose(self._source)


class _Feed:
    """What `HoldBack.run` reads: the chunks, then `TAIL`; closing it closes the chunks and the
    model's stream."""

    def __init__(self, chunks: Any, upstream: _Upstream | None) -> None:
        self._chunks = chunks
        self._upstream = upstream

    def __iter__(self) -> Iterator[Any]:
        yield from self._chunks
        yield TAIL

    async def __aiter__(self) -> AsyncIterator[Any]:
        async for chunk in self._chunks:
            yield chunk
        yield TAIL

    def close(self) -> None:
        _call(self._chunks, "close")
        if self._upstream is not None:
            self._upstream.close()

    async def aclose(self) -> None:
        await _aclose(self._chunks)
        if self._upstream is not None:
            await self._upstream.aclose()


def _call(obj: object, method: str) -> Any:
    fn: Callable[[], Any] | None = getattr(obj, method, None)
    return fn() if callable(fn) else None


async def _aclose(obj: object) -> None:
    if (done := _call(obj, "aclose")) is not None:
        await done


async def _started(session: StreamSession | AsyncStreamSession) -> AsyncStreamSession:
    """``session`` as a started `AsyncStreamSession` (a sync one, as `guard_chain` passes, is
    wrapped)."""
    if isinstance(session, StreamSession):
        sync = session
        return await AsyncStreamSession(lambda: sync).start()
    return await session.start()


def _join(items: list[Any]) -> Any:
    if not items:
        return ""
    if all(isinstance(i, str) for i in items):
        return "".join(items)
    merged = items[0]
    for item in items[1:]:
        merged = merged + item
    return message_chunk_to_message(merged)
