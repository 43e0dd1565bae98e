"""GuardedQueryEngine over a real VectorStoreIndex: query before, answer after, streams as they come.

The Gen and Stream guards are the tiny checkpoints; the LLM is llama-index-core's MockLLM told
what to answer. Nothing about the verdicts is scripted: the answers carry the contract's triggers.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator

import pytest

pytest.importorskip("llama_index.core")
pytest.importorskip("transformers")

from llama_index.core.base.response.schema import (
    AsyncStreamingResponse,
    Response,
    StreamingResponse,
)

import qwen3guard_integrations.llama_index as li
from qwen3guard_integrations import (
    Category,
    ConfigurationError,
    InvalidInputError,
    Level,
    Qwen3Guard,
    Qwen3StreamGuard,
    Role,
    UnsafeContentError,
    Verdict,
)
from qwen3guard_integrations.core.actions import BlockAction
from qwen3guard_integrations.llama_index import (
    DEFAULT_REFUSAL,
    METADATA_KEY,
    GuardedQueryEngine,
    Qwen3GuardNodePostprocessor,
)
from tests.support.llama_index_support import (
    SAFE_ANSWER,
    SAFE_QUERY,
    UNSAFE_ANSWER,
    UNSAFE_QUERY,
    Collector,
    ScriptedLLM,
    attach_collector,
    build_index,
    detach,
)

TRIGGER = "hotwire"
# where the unsafe answer turns unsafe: the piece that completes the trigger
TRIP_PIECE = UNSAFE_ANSWER.index("wire")


@pytest.fixture(scope="module")
def index():  # type: ignore[no-untyped-def]
    return build_index()


@pytest.fixture
def events() -> Iterator[Collector]:
    handler = attach_collector()
    yield handler
    detach(handler)


def _engine(index, llm: ScriptedLLM, guard: Qwen3Guard, *, streaming: bool = False, **kw):  # type: ignore[no-untyped-def]
    inner = index.as_query_engine(llm=llm, streaming=streaming, similarity_top_k=10)
    return GuardedQueryEngine(inner, guard, **kw)


def _verdicts(events: Collector) -> list[li.Qwen3GuardVerdictEvent]:
    return events.of("Qwen3GuardVerdictEvent")


# -- the public surface ------------------------------------------------------------------------
def test_public_surface_imports() -> None:
    for name in li.__all__:
        assert getattr(li, name) is not None, name


def test_without_llama_index_the_subpackage_names_the_extra() -> None:
    code = (
        "import sys\n"
        "sys.modules['llama_index'] = None\n"
        "sys.modules['llama_index.core'] = None\n"
        "import qwen3guard_integrations\n"  # the package itself needs no llama-index
        "from qwen3guard_integrations import MissingDependencyError\n"
        "try:\n"
        "    import qwen3guard_integrations.llama_index\n"
        "except MissingDependencyError as e:\n"
        "    print('MISSING', e.extra)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "MISSING llama-index"


def test_bad_arguments_raise_a_clear_error(guard: Qwen3Guard, index) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(InvalidInputError):
        GuardedQueryEngine(
            index.as_query_engine(llm=ScriptedLLM(SAFE_ANSWER)), guard, on_unsafe="x"
        )  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError):
        GuardedQueryEngine(object(), guard)  # type: ignore[arg-type]


def test_options_and_guards_are_checked_at_construction(
    guard: Qwen3Guard,
    stream_guard: Qwen3StreamGuard,
    index,  # type: ignore[no-untyped-def]
) -> None:
    inner = index.as_query_engine(llm=ScriptedLLM(SAFE_ANSWER))
    with pytest.raises(ConfigurationError, match="on_unsafe must be one of 'raise', 'refuse'"):
        GuardedQueryEngine(inner, guard, on_unsafe="drop")
    with pytest.raises(ConfigurationError, match=r"Qwen3Guard .*stream_guard="):
        GuardedQueryEngine(inner, stream_guard)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="Qwen3StreamGuard"):
        GuardedQueryEngine(inner, guard, stream_guard=guard)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="refusal"):
        GuardedQueryEngine(inner, guard, refusal="{answer}")
    with pytest.raises(ConfigurationError, match="Qwen3Guard"):
        Qwen3GuardNodePostprocessor(stream_guard)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="on_unsafe_node"):
        Qwen3GuardNodePostprocessor(guard, on_unsafe_node="raise")
    with pytest.raises(ConfigurationError, match="on_unsafe_query"):
        Qwen3GuardNodePostprocessor(guard, on_unsafe_query="flag")
    assert GuardedQueryEngine(inner, guard, on_unsafe=BlockAction.REFUSE).on_unsafe == "refuse"


def test_old_names_still_import_and_say_their_new_name(guard: Qwen3Guard) -> None:
    with pytest.warns(DeprecationWarning, match="use GuardedAnswer"):
        from qwen3guard_integrations.llama_index import StreamGuardConfig
    assert StreamGuardConfig is li.GuardedAnswer
    with pytest.warns(DeprecationWarning, match="use BlockAction"):
        assert li.OnUnsafe is BlockAction
    with pytest.warns(DeprecationWarning, match="use GuardedAnswer"):
        from qwen3guard_integrations.llama_index.streaming import StreamGuardConfig as old
    assert old is li.GuardedAnswer
    with pytest.warns(DeprecationWarning, match='use "drop"'):
        post = Qwen3GuardNodePostprocessor(guard, on_unsafe_query="empty")
    assert post.on_unsafe_query is BlockAction.DROP


# -- whole answers -----------------------------------------------------------------------------
def test_a_safe_answer_passes_with_its_verdicts_in_the_metadata(
    guard: Qwen3Guard,
    index,  # type: ignore[no-untyped-def]
    events: Collector,
) -> None:
    llm = ScriptedLLM(SAFE_ANSWER)
    response = _engine(index, llm, guard).query(SAFE_QUERY)
    assert isinstance(response, Response) and str(response) == llm.answer
    record = response.metadata[METADATA_KEY]
    assert record["blocked"] is None
    query, answer = Verdict.from_dict(record["query"]), Verdict.from_dict(record["response"])
    assert query.level is Level.SAFE and query.role is Role.PROMPT
    assert answer.level is Level.SAFE and answer.role is Role.RESPONSE
    assert len(response.source_nodes) == 5  # the node metadata LlamaIndex put there is kept
    assert all(n.node_id in response.metadata for n in response.source_nodes)
    assert [(e.stage, e.blocked) for e in _verdicts(events)] == [
        ("query", False),
        ("response", False),
    ]


def test_an_unsafe_answer_is_blocked(
    guard: Qwen3Guard,
    index,  # type: ignore[no-untyped-def]
    events: Collector,
) -> None:
    llm = ScriptedLLM(UNSAFE_ANSWER)
    with pytest.raises(UnsafeContentError) as err:
        _engine(index, llm, guard).query(SAFE_QUERY)
    v = err.value.verdict
    assert v.level is Level.UNSAFE and v.role is Role.RESPONSE
    assert v.categories == (Category.NON_VIOLENT_ILLEGAL_ACTS,)
    assert len(llm.prompts) == 1  # it was synthesised, then stopped
    assert [(e.stage, e.blocked, e.action) for e in _verdicts(events)][-1] == (
        "response",
        True,
        "raise",
    )


def test_an_unsafe_answer_can_become_a_refusal(guard: Qwen3Guard, index) -> None:  # type: ignore[no-untyped-def]
    llm = ScriptedLLM(UNSAFE_ANSWER)
    response = _engine(index, llm, guard, on_unsafe="refuse").query(SAFE_QUERY)
    assert str(response) == DEFAULT_REFUSAL and TRIGGER not in str(response)
    record = response.metadata[METADATA_KEY]
    assert record["blocked"] == "response"
    assert record["response"]["categories"] == ["Non-violent Illegal Acts"]


def test_an_unsafe_query_never_reaches_the_engine(guard: Qwen3Guard, index) -> None:  # type: ignore[no-untyped-def]
    llm = ScriptedLLM(SAFE_ANSWER)
    with pytest.raises(UnsafeContentError) as err:
        _engine(index, llm, guard).query(UNSAFE_QUERY)
    assert err.value.verdict.role is Role.PROMPT
    assert err.value.verdict.categories == (Category.VIOLENT,)
    assert llm.prompts == []
    refused = _engine(index, llm, guard, on_unsafe="refuse").query(UNSAFE_QUERY)
    assert str(refused) == DEFAULT_REFUSAL and refused.source_nodes == []
    assert refused.metadata[METADATA_KEY]["blocked"] == "query"
    assert llm.prompts == []


def test_with_the_postprocessor_the_answer_is_built_from_safe_nodes_only(
    guard: Qwen3Guard,
    index,  # type: ignore[no-untyped-def]
) -> None:
    llm = ScriptedLLM(SAFE_ANSWER)
    inner = index.as_query_engine(
        llm=llm, similarity_top_k=10, node_postprocessors=[Qwen3GuardNodePostprocessor(guard)]
    )
    response = GuardedQueryEngine(inner, guard).query(SAFE_QUERY)
    assert len(response.source_nodes) == 3
    assert response.metadata[METADATA_KEY]["response"]["level"] == "Safe"


async def test_async_answers_behave_the_same(
    guard: Qwen3Guard,
    index,  # type: ignore[no-untyped-def]
    events: Collector,
) -> None:
    ok = await _engine(index, ScriptedLLM(SAFE_ANSWER), guard).aquery(SAFE_QUERY)
    assert str(ok) == "".join(SAFE_ANSWER)
    assert ok.metadata[METADATA_KEY]["response"]["level"] == "Safe"
    with pytest.raises(UnsafeContentError) as err:
        await _engine(index, ScriptedLLM(UNSAFE_ANSWER), guard).aquery(SAFE_QUERY)
    assert err.value.verdict.role is Role.RESPONSE
    llm = ScriptedLLM(SAFE_ANSWER)
    with pytest.raises(UnsafeContentError):
        await _engine(index, llm, guard).aquery(UNSAFE_QUERY)
    assert llm.prompts == []
    blocked = [(e.stage, e.blocked) for e in _verdicts(events) if e.blocked]
    assert blocked == [("response", True), ("query", True)]


# -- streamed answers, moderated token by token ------------------------------------------------
def test_a_streamed_answer_that_turns_unsafe_stops_before_the_unsafe_token(
    guard: Qwen3Guard,
    stream_guard: Qwen3StreamGuard,
    index,  # type: ignore[no-untyped-def]
    events: Collector,
) -> None:
    llm = ScriptedLLM(UNSAFE_ANSWER)
    response = _engine(index, llm, guard, streaming=True, stream_guard=stream_guard).query(
        SAFE_QUERY
    )
    assert isinstance(response, StreamingResponse)
    got: list[str] = []
    pulled_at_first = None
    with pytest.raises(UnsafeContentError) as err:
        for text in response.response_gen:
            pulled_at_first = llm.pulled if pulled_at_first is None else pulled_at_first
            got.append(text)
    released = "".join(got)
    assert released and llm.answer.startswith(released)  # cleared text came out in order ...
    assert pulled_at_first is not None and pulled_at_first < TRIP_PIECE  # ... while it streamed
    assert TRIGGER not in released  # the token that completes the trigger never came out
    # and the LLM's stream was not read much further (the re-tokenizer and the debounce window
    # hold a few tokens back)
    assert TRIP_PIECE < llm.pulled < len(UNSAFE_ANSWER)
    v = err.value.verdict
    assert v.role is Role.RESPONSE and v.level is Level.UNSAFE
    assert v.categories == (Category.NON_VIOLENT_ILLEGAL_ACTS,)
    assert v.text_until is not None and TRIGGER in v.text_until
    record = response.metadata[METADATA_KEY]
    assert record["blocked"] == "stream" and record["complete"] is True
    assert record["response"]["token_index"] == v.token_index
    assert [(e.stage, e.blocked) for e in _verdicts(events)] == [
        ("query", False),
        ("stream", True),
    ]
    # the stream is read after query() returned; its event still belongs to the query's span
    query_event, stream_event = _verdicts(events)
    assert stream_event.span_id is not None and stream_event.span_id == query_event.span_id


def test_a_safe_stream_is_released_whole(
    guard: Qwen3Guard,
    stream_guard: Qwen3StreamGuard,
    index,  # type: ignore[no-untyped-def]
) -> None:
    llm = ScriptedLLM(SAFE_ANSWER)
    response = _engine(index, llm, guard, streaming=True, stream_guard=stream_guard).query(
        SAFE_QUERY
    )
    assert "".join(response.response_gen) == llm.answer
    record = response.metadata[METADATA_KEY]
    assert record["blocked"] is None and record["complete"] is True
    assert record["query"]["level"] == "Safe"


def test_a_blocked_stream_can_end_with_the_refusal(
    guard: Qwen3Guard,
    stream_guard: Qwen3StreamGuard,
    index,  # type: ignore[no-untyped-def]
) -> None:
    llm = ScriptedLLM(UNSAFE_ANSWER)
    engine = _engine(
        index, llm, guard, streaming=True, stream_guard=stream_guard, on_unsafe="refuse"
    )
    got = list(engine.query(SAFE_QUERY).response_gen)
    # the refusal is a piece of its own, never glued onto the last released word
    assert got[-1] == "\n\n" + DEFAULT_REFUSAL
    assert TRIGGER not in "".join(got[:-1]) and llm.answer.startswith("".join(got[:-1]))


async def test_an_async_stream_stops_the_same_way(
    guard: Qwen3Guard,
    stream_guard: Qwen3StreamGuard,
    index,  # type: ignore[no-untyped-def]
    events: Collector,
) -> None:
    llm = ScriptedLLM(UNSAFE_ANSWER)
    engine = _engine(index, llm, guard, streaming=True, stream_guard=stream_guard)
    response = await engine.aquery(SAFE_QUERY)
    assert isinstance(response, AsyncStreamingResponse)
    got: list[str] = []
    with pytest.raises(UnsafeContentError) as err:
        async for text in response.response_gen:
            got.append(text)
    released = "".join(got)
    assert released and llm.answer.startswith(released) and TRIGGER not in released
    assert TRIP_PIECE < llm.pulled < len(UNSAFE_ANSWER)
    assert err.value.verdict.categories == (Category.NON_VIOLENT_ILLEGAL_ACTS,)
    assert response.metadata[METADATA_KEY]["blocked"] == "stream"
    assert [e.stage for e in _verdicts(events) if e.blocked] == ["stream"]

    safe = await _engine(
        index, ScriptedLLM(SAFE_ANSWER), guard, streaming=True, stream_guard=stream_guard
    ).aquery(SAFE_QUERY)
    assert "".join([t async for t in safe.response_gen]) == "".join(SAFE_ANSWER)


# -- streamed answers without a Stream guard: buffered, checked whole, then released -----------
def test_without_a_stream_guard_nothing_unchecked_is_released(
    guard: Qwen3Guard,
    index,  # type: ignore[no-untyped-def]
) -> None:
    llm = ScriptedLLM(UNSAFE_ANSWER)
    response = _engine(index, llm, guard, streaming=True).query(SAFE_QUERY)
    got: list[str] = []
    with pytest.raises(UnsafeContentError) as err:
        for text in response.response_gen:
            got.append(text)
    assert got == []
    assert err.value.verdict.role is Role.RESPONSE
    assert response.metadata[METADATA_KEY]["blocked"] == "response"

    ok = _engine(index, ScriptedLLM(SAFE_ANSWER), guard, streaming=True).query(SAFE_QUERY)
    assert list(ok.response_gen) == SAFE_ANSWER  # released piece by piece, once checked


async def test_without_a_stream_guard_async_streams_are_buffered_too(
    guard: Qwen3Guard,
    index,  # type: ignore[no-untyped-def]
) -> None:
    response = await _engine(index, ScriptedLLM(UNSAFE_ANSWER), guard, streaming=True).aquery(
        SAFE_QUERY
    )
    got: list[str] = []
    with pytest.raises(UnsafeContentError):
        async for text in response.response_gen:
            got.append(text)
    assert got == []


async def test_a_refused_query_to_a_streaming_engine_is_still_a_stream(
    guard: Qwen3Guard,
    index,  # type: ignore[no-untyped-def]
) -> None:
    llm = ScriptedLLM(SAFE_ANSWER)
    engine = _engine(index, llm, guard, streaming=True, on_unsafe="refuse")
    refused = engine.query(UNSAFE_QUERY)
    assert isinstance(refused, StreamingResponse)  # code written for streaming keeps working
    assert "".join(refused.response_gen) == DEFAULT_REFUSAL
    assert refused.metadata[METADATA_KEY]["blocked"] == "query"
    arefused = await engine.aquery(UNSAFE_QUERY)
    assert isinstance(arefused, AsyncStreamingResponse)
    assert "".join([p async for p in arefused.async_response_gen()]) == DEFAULT_REFUSAL
    assert llm.prompts == []
