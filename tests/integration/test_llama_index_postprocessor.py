"""Qwen3GuardNodePostprocessor in a real VectorStoreIndex query engine, on the tiny Gen checkpoint."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

pytest.importorskip("llama_index.core")
pytest.importorskip("transformers")

from llama_index.core.schema import MetadataMode

from qwen3guard_integrations import Category, Level, Qwen3Guard, UnsafeContentError
from qwen3guard_integrations.llama_index import (
    METADATA_KEY,
    Qwen3GuardNodePostprocessor,
    Qwen3GuardVerdictEvent,
)
from tests.support.llama_index_support import (
    INJECTED_DOC,
    SAFE_ANSWER,
    SAFE_DOCS,
    SAFE_QUERY,
    TRIGGER_DOC,
    UNSAFE_QUERY,
    Collector,
    ScriptedLLM,
    attach_collector,
    build_index,
    detach,
)


@pytest.fixture(scope="module")
def index():  # type: ignore[no-untyped-def]
    return build_index()


@pytest.fixture
def events() -> Iterator[Collector]:
    handler = attach_collector()
    yield handler
    detach(handler)


def _engine(index, post: Qwen3GuardNodePostprocessor, llm: ScriptedLLM):  # type: ignore[no-untyped-def]
    return index.as_query_engine(llm=llm, node_postprocessors=[post], similarity_top_k=10)


def _context(prompt: str) -> str:
    """The retrieved-context part of the default text-QA prompt."""
    return prompt.split("---------------------")[1]


def test_all_documents_are_retrieved_without_the_guard(index) -> None:  # type: ignore[no-untyped-def]
    # the baseline the other tests compare with: every document reaches synthesis unguarded
    llm = ScriptedLLM(SAFE_ANSWER)
    index.as_query_engine(llm=llm, similarity_top_k=10).query(SAFE_QUERY)
    ctx = _context(llm.prompts[-1])
    assert all(t in ctx for t in (*SAFE_DOCS, INJECTED_DOC, TRIGGER_DOC))


def test_injected_and_unsafe_nodes_are_dropped_and_the_rest_reach_synthesis(
    guard: Qwen3Guard,
    index,  # type: ignore[no-untyped-def]
    events: Collector,
) -> None:
    llm = ScriptedLLM(SAFE_ANSWER)
    response = _engine(index, Qwen3GuardNodePostprocessor(guard), llm).query(SAFE_QUERY)
    ctx = _context(llm.prompts[-1])
    assert all(t in ctx for t in SAFE_DOCS)
    assert INJECTED_DOC not in ctx and TRIGGER_DOC not in ctx
    assert sorted(n.node.get_content() for n in response.source_nodes) == sorted(SAFE_DOCS)
    assert str(response) == "".join(SAFE_ANSWER)

    got = events.of("Qwen3GuardVerdictEvent")
    assert [e.stage for e in got].count("query") == 1 and len(got) == 6
    by_text = {index.docstore.get_node(e.node_id).get_content(): e for e in got if e.node_id}
    jail = by_text[INJECTED_DOC]
    assert jail.blocked and jail.action == "drop"
    assert jail.verdict.level is Level.UNSAFE and jail.verdict.categories == (Category.JAILBREAK,)
    trig = by_text[TRIGGER_DOC]
    assert trig.blocked and trig.verdict.has_category("Non-violent Illegal Acts")
    assert all(not by_text[t].blocked and by_text[t].action == "allow" for t in SAFE_DOCS)
    assert all(isinstance(e, Qwen3GuardVerdictEvent) and e.span_id for e in got)


def test_flag_mode_passes_copies_and_leaves_the_retrieved_nodes_untouched(
    guard: Qwen3Guard,
    index,  # type: ignore[no-untyped-def]
) -> None:
    retrieved = index.as_retriever(similarity_top_k=10).retrieve(SAFE_QUERY)
    before = [n.model_dump() for n in retrieved]
    post = Qwen3GuardNodePostprocessor(guard, on_unsafe_node="flag")
    out = post.postprocess_nodes(retrieved, query_str=SAFE_QUERY)

    assert [n.model_dump() for n in retrieved] == before  # nothing received was mutated
    assert [n.node_id for n in out] == [n.node_id for n in retrieved]  # order kept, none dropped
    flagged = {n.node.get_content(): n for n in out if METADATA_KEY in n.node.metadata}
    assert set(flagged) == {INJECTED_DOC, TRIGGER_DOC}
    for n in out:
        original = next(r for r in retrieved if r.node_id == n.node_id)
        assert (n is original) == (n.node.get_content() not in flagged)
    jail = flagged[INJECTED_DOC].node
    assert jail.metadata[METADATA_KEY]["level"] == "Unsafe"
    assert jail.metadata[METADATA_KEY]["categories"] == ["Jailbreak"]
    # the verdict never reaches the LLM or the embedding model
    assert METADATA_KEY not in jail.get_content(metadata_mode=MetadataMode.LLM)
    assert METADATA_KEY not in jail.get_content(metadata_mode=MetadataMode.EMBED)
    assert METADATA_KEY in jail.get_content(metadata_mode=MetadataMode.ALL)


def test_flagged_nodes_reach_synthesis_without_their_verdict(
    guard: Qwen3Guard,
    index,  # type: ignore[no-untyped-def]
) -> None:
    llm = ScriptedLLM(SAFE_ANSWER)
    post = Qwen3GuardNodePostprocessor(guard, on_unsafe_node="flag")
    response = _engine(index, post, llm).query(SAFE_QUERY)
    ctx = _context(llm.prompts[-1])
    assert INJECTED_DOC in ctx and TRIGGER_DOC in ctx
    assert "Jailbreak" not in ctx and METADATA_KEY not in ctx
    levels = {
        n.node.get_content(): n.node.metadata.get(METADATA_KEY, {}).get("level")
        for n in response.source_nodes
    }
    assert levels[INJECTED_DOC] == levels[TRIGGER_DOC] == "Unsafe"
    assert all(levels[t] is None for t in SAFE_DOCS)


def test_an_unsafe_query_is_stopped_before_synthesis(
    guard: Qwen3Guard,
    index,  # type: ignore[no-untyped-def]
    events: Collector,
) -> None:
    llm = ScriptedLLM(SAFE_ANSWER)
    with pytest.raises(UnsafeContentError) as err:
        _engine(index, Qwen3GuardNodePostprocessor(guard), llm).query(UNSAFE_QUERY)
    assert err.value.verdict.level is Level.UNSAFE
    assert err.value.verdict.categories == (Category.VIOLENT,)
    assert llm.prompts == []  # the LLM never ran
    query_events = [e for e in events.of("Qwen3GuardVerdictEvent") if e.stage == "query"]
    assert [(e.blocked, e.action) for e in query_events] == [(True, "raise")]


def test_an_unsafe_query_can_get_no_context_instead(
    guard: Qwen3Guard,
    index,  # type: ignore[no-untyped-def]
) -> None:
    llm = ScriptedLLM(SAFE_ANSWER)
    post = Qwen3GuardNodePostprocessor(guard, on_unsafe_query="empty")
    response = _engine(index, post, llm).query(UNSAFE_QUERY)
    assert response.source_nodes == [] and llm.prompts == []
    assert str(response) == "Empty Response"  # LlamaIndex's own answer for no context


def test_only_the_nodes_when_the_query_check_is_off(guard: Qwen3Guard, index) -> None:  # type: ignore[no-untyped-def]
    llm = ScriptedLLM(SAFE_ANSWER)
    post = Qwen3GuardNodePostprocessor(guard, check_query=False)
    response = _engine(index, post, llm).query(UNSAFE_QUERY)
    assert sorted(n.node.get_content() for n in response.source_nodes) == sorted(SAFE_DOCS)


async def test_async_query_drops_the_same_nodes_and_stops_the_same_query(
    guard: Qwen3Guard,
    index,  # type: ignore[no-untyped-def]
    events: Collector,
) -> None:
    llm = ScriptedLLM(SAFE_ANSWER)
    engine = _engine(index, Qwen3GuardNodePostprocessor(guard), llm)
    response = await engine.aquery(SAFE_QUERY)
    ctx = _context(llm.prompts[-1])
    assert all(t in ctx for t in SAFE_DOCS)
    assert INJECTED_DOC not in ctx and TRIGGER_DOC not in ctx
    assert sorted(n.node.get_content() for n in response.source_nodes) == sorted(SAFE_DOCS)
    blocked = [e for e in events.of("Qwen3GuardVerdictEvent") if e.blocked]
    assert len(blocked) == 2 and all(e.stage == "node" for e in blocked)

    with pytest.raises(UnsafeContentError):
        await engine.aquery(UNSAFE_QUERY)
    assert len(llm.prompts) == 1  # only the safe query was synthesised
