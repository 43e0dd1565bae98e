"""A query engine that checks the query before, and the answer after (or while it streams).

```python
engine = GuardedQueryEngine(index.as_query_engine(), guard)          # Gen guard only
engine = GuardedQueryEngine(index.as_query_engine(streaming=True), guard, stream_guard=sguard)
response = engine.query("Tell me about Paris.")
response.metadata["qwen3guard"]   # {"query": {...}, "response": {...}, "blocked": None, ...}
```
"""

from __future__ import annotations

from collections.abc import AsyncGenerator

from llama_index.core.base.base_query_engine import BaseQueryEngine
from llama_index.core.base.response.schema import (
    RESPONSE_TYPE,
    AsyncStreamingResponse,
    Response,
    StreamingResponse,
)
from llama_index.core.callbacks import CallbackManager
from llama_index.core.prompts.mixin import PromptMixinType
from llama_index.core.schema import NodeWithScore, QueryBundle

from ..core.actions import DEFAULT_REFUSAL, BlockAction
from ..core.errors import ConfigurationError
from ..guards.gen import Qwen3Guard
from ..guards.stream import Qwen3StreamGuard
from .answer import AnswerOptions, GuardedAnswer
from .events import aemit, emit
from .postprocessor import METADATA_KEY
from .streaming import aguard_token_gen, guard_token_gen

__all__ = ["DEFAULT_REFUSAL", "GuardedQueryEngine"]


class GuardedQueryEngine(BaseQueryEngine):
    """Wraps a query engine: checks the query, then the answer, with Qwen3Guard.

    The query is checked in prompt mode before the wrapped engine runs (a blocked query never
    reaches retrieval or synthesis). A whole answer is checked in response mode with the query as
    its prompt. A streamed answer (``StreamingResponse`` / ``AsyncStreamingResponse``) gets a
    guarded ``response_gen``: with ``stream_guard`` it is moderated token by token and stops
    before the first blocked token is yielded; without one it is buffered, checked with ``guard``
    and only then released (see `streaming`).

    Verdicts go into ``response.metadata[metadata_key]``: a dict with ``"query"`` and
    ``"response"`` (each a ``Verdict.to_dict()`` without the flagged ``text_until`` unless
    ``include_text``, or None), ``"blocked"`` (None, ``"query"``,
    ``"response"`` or ``"stream"``) and, for streams, ``"complete"`` (True once the stream
    ended; read the record after consuming the stream). Every verdict is also sent as a
    `Qwen3GuardVerdictEvent`.

    Args:
        query_engine: the engine to guard (any LlamaIndex ``BaseQueryEngine``).
        guard: the Gen guard (its policy decides what blocks).
        stream_guard: a Stream guard for streamed answers (its own policy decides what blocks).
        check_query: check the query before the engine runs.
        check_response: check the answer (whole or streamed).
        on_unsafe: `BlockAction` ``"raise"`` (`UnsafeContentError`), or ``"refuse"``: answer
            ``refusal`` instead (a stream yields it as a piece of its own after the cleared
            text, or just ends when ``refusal`` is empty); see `answer`.
        refusal: the refusal template (`render_refusal`: may name ``{level}``,
            ``{categories}``, ``{stage}``).
        metadata_key: where verdicts go in ``response.metadata``.
        streaming: whether the wrapped engine streams (default: read from its synthesizer), so
            that a refused query comes back in the same shape (a stream yielding the refusal).
        include_text: keep the flagged text (``text_until``) in the metadata.
        callback_manager: LlamaIndex callback manager (default: a new empty one).

    Raises:
        ConfigurationError: at construction, for a wrong engine, guard or option.
    """

    def __init__(
        self,
        query_engine: BaseQueryEngine,
        guard: Qwen3Guard,
        *,
        stream_guard: Qwen3StreamGuard | None = None,
        check_query: bool = True,
        check_response: bool = True,
        on_unsafe: BlockAction | str = BlockAction.RAISE,
        refusal: str = DEFAULT_REFUSAL,
        metadata_key: str = METADATA_KEY,
        streaming: bool | None = None,
        include_text: bool = False,
        callback_manager: CallbackManager | None = None,
    ) -> None:
        if not isinstance(query_engine, BaseQueryEngine):
            raise ConfigurationError(
                "query_engine must be a LlamaIndex BaseQueryEngine, not "
                f"{type(query_engine).__name__}"
            )
        self.options = AnswerOptions(
            "GuardedQueryEngine", guard, stream_guard, on_unsafe, refusal, include_text
        )
        self.query_engine = query_engine
        self.guard = guard
        self.stream_guard = stream_guard
        self.check_query = check_query
        self.check_response = check_response
        self.on_unsafe = self.options.on_unsafe
        self.refusal = self.options.refusal
        self.metadata_key = metadata_key
        self.streaming = streaming
        super().__init__(callback_manager)

    def _get_prompt_modules(self) -> PromptMixinType:
        return {"query_engine": self.query_engine}

    # -- the pure parts: plan, then apply what the one I/O call found --------------------------
    def _streams(self) -> bool:
        """Whether the wrapped engine answers with streams (``streaming``, else its
        synthesizer's own setting)."""
        if self.streaming is not None:
            return self.streaming
        synthesizer = getattr(self.query_engine, "_response_synthesizer", None)
        return bool(getattr(synthesizer, "_streaming", False))

    def _refused(
        self, answer: GuardedAnswer, sources: list[NodeWithScore], *, is_async: bool
    ) -> RESPONSE_TYPE:
        """A blocked query or answer: raise, or the refusal in the shape a caller of this
        engine expects (a stream that yields it, for a blocked query to a streaming engine)."""
        if answer.action is BlockAction.RAISE:
            raise answer.error()
        text = answer.refusal_text()
        metadata = {self.metadata_key: answer.record}
        if answer.record["blocked"] != "query" or not self._streams():
            return Response(text, source_nodes=sources, metadata=metadata)
        pieces = [text] if text else []
        if not is_async:
            return StreamingResponse(response_gen=(p for p in pieces), metadata=metadata)

        async def agen() -> AsyncGenerator[str, None]:
            for piece in pieces:
                yield piece

        return AsyncStreamingResponse(response_gen=agen(), metadata=metadata)

    def _unchecked(self, answer: GuardedAnswer, response: RESPONSE_TYPE) -> RESPONSE_TYPE | None:
        """The response to return without a Gen check (checks off, an empty answer, a stream
        now guarded as it is read), or None when its text must be checked."""
        if isinstance(response, (StreamingResponse, AsyncStreamingResponse)):
            if self.check_response:
                return self._wrap_stream(answer, response)
        elif self.check_response and _answer_text(response) is not None:
            return None
        response.metadata = {**(response.metadata or {}), self.metadata_key: answer.record}
        return response

    def _checked(self, answer: GuardedAnswer, response: RESPONSE_TYPE) -> RESPONSE_TYPE:
        """The response once its verdict is recorded: itself, or the refusal."""
        if answer.blocked_by is not None:
            return self._refused(answer, list(response.source_nodes), is_async=False)
        response.metadata = {**(response.metadata or {}), self.metadata_key: answer.record}
        return response

    def _wrap_stream(
        self, answer: GuardedAnswer, response: StreamingResponse | AsyncStreamingResponse
    ) -> RESPONSE_TYPE:
        metadata = {**(response.metadata or {}), self.metadata_key: answer.record}
        if isinstance(response, StreamingResponse):
            return StreamingResponse(
                response_gen=guard_token_gen(response.response_gen, answer),
                source_nodes=response.source_nodes,
                metadata=metadata,
            )
        return AsyncStreamingResponse(
            response_gen=aguard_token_gen(response.response_gen, answer),
            source_nodes=response.source_nodes,
            metadata=metadata,
        )

    # -- LlamaIndex hooks: the I/O -------------------------------------------------------------
    def _query(self, query_bundle: QueryBundle) -> RESPONSE_TYPE:
        answer = self.options.answer(query_bundle.query_str)
        if self.check_query:
            verdict = self.guard.check_prompt(answer.query)
            emit(answer.event(verdict, self.guard.blocks(verdict), "query"))
            if answer.blocked_by is not None:
                return self._refused(answer, [], is_async=False)
        response = self.query_engine.query(query_bundle)
        done = self._unchecked(answer, response)
        if done is not None:
            return done
        verdict = self.guard.check_response(answer.query, str(response))
        emit(answer.event(verdict, self.guard.blocks(verdict), "response"))
        return self._checked(answer, response)

    async def _aquery(self, query_bundle: QueryBundle) -> RESPONSE_TYPE:
        answer = self.options.answer(query_bundle.query_str)
        if self.check_query:
            verdict = await self.guard.acheck_prompt(answer.query)
            await aemit(answer.event(verdict, self.guard.blocks(verdict), "query"))
            if answer.blocked_by is not None:
                return self._refused(answer, [], is_async=True)
        response = await self.query_engine.aquery(query_bundle)
        done = self._unchecked(answer, response)
        if done is not None:
            return done
        verdict = await self.guard.acheck_response(answer.query, str(response))
        await aemit(answer.event(verdict, self.guard.blocks(verdict), "response"))
        return self._checked(answer, response)


def _answer_text(response: RESPONSE_TYPE) -> str | None:
    """The text of a whole answer (JSON for a ``PydanticResponse``); None when empty."""
    if getattr(response, "response", None) is None:
        return None
    text = str(response)
    return text if text.strip() else None
