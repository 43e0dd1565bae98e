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
from typing import Any

from llama_index.core.base.base_query_engine import BaseQueryEngine
from llama_index.core.base.response.schema import (
    RESPONSE_TYPE,
    AsyncStreamingResponse,
    Response,
    StreamingResponse,
)
from llama_index.core.callbacks import CallbackManager
from llama_index.core.instrumentation.span import active_span_id
from llama_index.core.prompts.mixin import PromptMixinType
from llama_index.core.schema import NodeWithScore, QueryBundle

from ..core.errors import InvalidInputError, UnsafeContentError
from ..core.verdict import Verdict
from ..guards.gen import Qwen3Guard
from ..guards.stream import Qwen3StreamGuard
from .events import Qwen3GuardVerdictEvent, Stage, aemit, emit
from .postprocessor import METADATA_KEY
from .streaming import OnUnsafe, StreamGuardConfig, aguard_token_gen, guard_token_gen

__all__ = ["DEFAULT_REFUSAL", "GuardedQueryEngine"]

#: The answer given for a blocked query or answer under ``on_unsafe="refuse"``.
DEFAULT_REFUSAL = "I can't help with that."


class GuardedQueryEngine(BaseQueryEngine):
    """Wraps a query engine: checks the query, then the answer, with Qwen3Guard.

    The query is checked in prompt mode before the wrapped engine runs (a blocked query never
    reaches retrieval or synthesis). A whole answer is checked in response mode with the query as
    its prompt. A streamed answer (``StreamingResponse`` / ``AsyncStreamingResponse``) gets a
    guarded ``response_gen``: with ``stream_guard`` it is moderated token by token and stops
    before the first blocked token is yielded; without one it is buffered, checked with ``guard``
    and only then released (see `streaming`).

    Verdicts go into ``response.metadata[metadata_key]``: a dict with ``"query"`` and
    ``"response"`` (each a ``Verdict.to_dict()`` or None), ``"blocked"`` (None, ``"query"``,
    ``"response"`` or ``"stream"``) and, for streams, ``"complete"`` (True once the stream
    ended; read the record after consuming the stream). Every verdict is also sent as a
    `Qwen3GuardVerdictEvent`.

    Args:
        query_engine: the engine to guard (any LlamaIndex ``BaseQueryEngine``).
        guard: the Gen guard (its policy decides what blocks).
        stream_guard: a Stream guard for streamed answers (its own policy decides what blocks).
        check_query: check the query before the engine runs.
        check_response: check the answer (whole or streamed).
        on_unsafe: ``"raise"`` `UnsafeContentError`, or
            ``"refuse"``: answer ``refusal`` instead (a stream yields it after the cleared text,
            or ends silently when ``refusal`` is empty).
        refusal: the refusal text.
        metadata_key: where verdicts go in ``response.metadata``.
        streaming: whether the wrapped engine streams (default: read from its synthesizer), so
            that a refused query comes back in the same shape (a stream yielding the refusal).
        callback_manager: LlamaIndex callback manager (default: a new empty one).
    """

    def __init__(
        self,
        query_engine: BaseQueryEngine,
        guard: Qwen3Guard,
        *,
        stream_guard: Qwen3StreamGuard | None = None,
        check_query: bool = True,
        check_response: bool = True,
        on_unsafe: OnUnsafe = "raise",
        refusal: str = DEFAULT_REFUSAL,
        metadata_key: str = METADATA_KEY,
        streaming: bool | None = None,
        callback_manager: CallbackManager | None = None,
    ) -> None:
        if on_unsafe not in ("raise", "refuse"):
            raise InvalidInputError(f"on_unsafe must be 'raise' or 'refuse', got {on_unsafe!r}")
        if not isinstance(query_engine, BaseQueryEngine):
            raise InvalidInputError(
                f"query_engine must be a LlamaIndex BaseQueryEngine, not {type(query_engine).__name__}"
            )
        self.query_engine = query_engine
        self.guard = guard
        self.stream_guard = stream_guard
        self.check_query = check_query
        self.check_response = check_response
        self.on_unsafe: OnUnsafe = on_unsafe
        self.refusal = refusal
        self.metadata_key = metadata_key
        self.streaming = streaming
        super().__init__(callback_manager)

    def _get_prompt_modules(self) -> PromptMixinType:
        return {"query_engine": self.query_engine}

    # -- the pure parts ------------------------------------------------------------------------
    def _event(
        self, verdict: Verdict, stage: Stage, record: dict[str, Any]
    ) -> Qwen3GuardVerdictEvent:
        """Record ``verdict`` under its stage and build its event."""
        blocked = self.guard.blocks(verdict)
        record["query" if stage == "query" else "response"] = verdict.to_dict()
        if blocked:
            record["blocked"] = stage
        action = self.on_unsafe if blocked else "allow"
        return Qwen3GuardVerdictEvent(verdict=verdict, stage=stage, blocked=blocked, action=action)

    def _refuse(
        self, verdict: Verdict, record: dict[str, Any], sources: list[NodeWithScore]
    ) -> Response:
        if self.on_unsafe == "raise":
            raise UnsafeContentError(verdict)
        return Response(self.refusal, source_nodes=sources, metadata={self.metadata_key: record})

    def _streams(self) -> bool:
        """Whether the wrapped engine answers with streams (``streaming``, else its synthesizer's
        own setting)."""
        if self.streaming is not None:
            return self.streaming
        synthesizer = getattr(self.query_engine, "_response_synthesizer", None)
        return bool(getattr(synthesizer, "_streaming", False))

    def _refuse_query(self, verdict: Verdict, record: dict[str, Any], *, is_async: bool) -> Any:
        """A blocked query: raise, or the refusal in the shape a caller of this engine expects
        (a stream that yields it, for a streaming engine)."""
        response = self._refuse(verdict, record, [])
        if not self._streams():
            return response
        pieces = [self.refusal] if self.refusal else []
        if not is_async:
            return StreamingResponse(response_gen=(p for p in pieces), metadata=response.metadata)

        async def agen() -> AsyncGenerator[str, None]:
            for piece in pieces:
                yield piece

        return AsyncStreamingResponse(response_gen=agen(), metadata=response.metadata)

    def _attach(self, response: Any, record: dict[str, Any]) -> None:
        response.metadata = {**(response.metadata or {}), self.metadata_key: record}

    def _answer_text(self, response: RESPONSE_TYPE) -> str | None:
        """The text of a whole answer (JSON for a ``PydanticResponse``); None when empty."""
        if getattr(response, "response", None) is None:
            return None
        text = str(response)
        return text if text.strip() else None

    def _wrap_stream(
        self, query: str, response: RESPONSE_TYPE, record: dict[str, Any]
    ) -> RESPONSE_TYPE:
        cfg = StreamGuardConfig(
            query=query,
            guard=self.guard,
            stream_guard=self.stream_guard,
            on_unsafe=self.on_unsafe,
            refusal=self.refusal,
            span_id=active_span_id.get(),
            record=record,
        )
        metadata = {**(response.metadata or {}), self.metadata_key: record}
        if isinstance(response, StreamingResponse):
            return StreamingResponse(
                response_gen=guard_token_gen(response.response_gen, cfg),
                source_nodes=response.source_nodes,
                metadata=metadata,
            )
        assert isinstance(response, AsyncStreamingResponse)
        return AsyncStreamingResponse(
            response_gen=aguard_token_gen(response.response_gen, cfg),
            source_nodes=response.source_nodes,
            metadata=metadata,
        )

    @staticmethod
    def _is_stream(response: RESPONSE_TYPE) -> bool:
        return isinstance(response, (StreamingResponse, AsyncStreamingResponse))

    # -- LlamaIndex hooks ----------------------------------------------------------------------
    def _query(self, query_bundle: QueryBundle) -> RESPONSE_TYPE:
        query = query_bundle.query_str
        record: dict[str, Any] = {"query": None, "response": None, "blocked": None}
        if self.check_query:
            verdict = self.guard.check_prompt(query)
            emit(self._event(verdict, "query", record))
            if record["blocked"]:
                return self._refuse_query(verdict, record, is_async=False)
        response = self.query_engine.query(query_bundle)
        if not self.check_response:
            self._attach(response, record)
            return response
        if self._is_stream(response):
            return self._wrap_stream(query, response, record)
        text = self._answer_text(response)
        if text is not None:
            verdict = self.guard.check_response(query, text)
            emit(self._event(verdict, "response", record))
            if record["blocked"]:
                return self._refuse(verdict, record, list(response.source_nodes))
        self._attach(response, record)
        return response

    async def _aquery(self, query_bundle: QueryBundle) -> RESPONSE_TYPE:
        query = query_bundle.query_str
        record: dict[str, Any] = {"query": None, "response": None, "blocked": None}
        if self.check_query:
            verdict = await self.guard.acheck_prompt(query)
            await aemit(self._event(verdict, "query", record))
            if record["blocked"]:
                return self._refuse_query(verdict, record, is_async=True)
        response = await self.query_engine.aquery(query_bundle)
        if not self.check_response:
            self._attach(response, record)
            return response
        if self._is_stream(response):
            return self._wrap_stream(query, response, record)
        text = self._answer_text(response)
        if text is not None:
            verdict = await self.guard.acheck_response(query, text)
            await aemit(self._event(verdict, "response", record))
            if record["blocked"]:
                return self._refuse(verdict, record, list(response.source_nodes))
        self._attach(response, record)
        return response
