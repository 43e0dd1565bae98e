"""GuardedChatEngine over real LlamaIndex chat engines: no unchecked token reaches the user.

The engines are what ``VectorStoreIndex.as_chat_engine`` returns in its ``condense_plus_context``,
``context`` and ``simple`` modes, over a real index (``MockEmbedding``); the LLM is a scripted
``MockLLM`` whose answer turns unsafe mid-stream; the guards are the tiny checkpoints. Every piece
of text that reaches the consumer is collected: the pieces of ``response_gen`` /
``async_response_gen`` (or the whole answer), the chat history the engine keeps, and every
instrumentation event a handler receives. None may hold a trigger word.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

pytest.importorskip("llama_index.core")
pytest.importorskip("transformers")

from llama_index.core.chat_engine.types import AgentChatResponse, StreamingAgentChatResponse

from qwen3guard_integrations import (
    ConfigurationError,
    Level,
    Role,
    UnsafeContentError,
)
from qwen3guard_integrations.llama_index import (
    DEFAULT_REFUSAL,
    METADATA_KEY,
    GuardedChatEngine,
)
from qwen3guard_integrations.testing.contract import RESPONSE_TRIGGERS
from tests.support.llama_index_support import (
    BOMB_ANSWER,
    LLM_TRACE_EVENTS,
    SAFE_ANSWER,
    SAFE_DOCS,
    SAFE_QUERY,
    UNSAFE_ANSWER,
    UNSAFE_QUERY,
    Collector,
    ScriptedLLM,
    attach_collector,
    build_index,
    detach,
    event_text,
)

MODES = ["condense_plus_context", "context", "simple"]
TRIGGERS = [t.phrase for t in RESPONSE_TRIGGERS]
# (answer, index of the piece that completes its trigger)
ANSWERS = {
    "hotwire": (UNSAFE_ANSWER, UNSAFE_ANSWER.index("wire")),
    "bomb": (BOMB_ANSWER, BOMB_ANSWER.index(" bomb")),
}
# the re-tokenizer holds back the word being typed and the debounce window one token: the LLM
# is read at most this many pieces past the one that completes the trigger (measured: 3)
AFTER_BLOCK = 3


@pytest.fixture(scope="module")
def index():  # type: ignore[no-untyped-def]
    return build_index(SAFE_DOCS)


@pytest.fixture
def events() -> Iterator[Collector]:
    handler = attach_collector()
    yield handler
    detach(handler)


def _engine(index, mode: str, llm: ScriptedLLM, guard, stream_guard=None, **kw):  # type: ignore[no-untyped-def]
    inner = index.as_chat_engine(chat_mode=mode, llm=llm, similarity_top_k=10)
    return GuardedChatEngine(inner, guard=guard, stream_guard=stream_guard, **kw)


@dataclass
class Seen:
    """Everything one turn gave its consumer."""

    pieces: list[str] = field(default_factory=list)
    error: UnsafeContentError | None = None
    response: Any = None

    @property
    def text(self) -> str:
        return "".join(self.pieces)


def _turn(engine: GuardedChatEngine, how: str, message: str) -> Seen:
    seen = Seen()
    try:
        if how == "chat":
            seen.response = engine.chat(message)
            seen.pieces.append(str(seen.response))
        else:
            seen.response = engine.stream_chat(message)
            for piece in seen.response.response_gen:
                seen.pieces.append(piece)
    except UnsafeContentError as err:
        seen.error = err
    return seen


async def _aturn(engine: GuardedChatEngine, how: str, message: str) -> Seen:
    seen = Seen()
    try:
        if how == "achat":
            seen.response = await engine.achat(message)
            seen.pieces.append(str(seen.response))
        else:
            seen.response = await engine.astream_chat(message)
            async for piece in seen.response.async_response_gen():
                seen.pieces.append(piece)
    except UnsafeContentError as err:
        seen.error = err
    return seen


def _verdicts(events: Collector) -> list[Any]:
    return events.of("Qwen3GuardVerdictEvent")


def _assert_no_leak(seen: Seen, engine: Any, events: Collector) -> None:
    """No trigger in what the consumer got, in the engine's memory, or in any event a handler
    received (but the wrapped LLM's own trace events and the verdict's audit field)."""
    history = "\n".join(str(m.content) for m in engine.chat_history)
    deltas = [e.delta for e in events.of("StreamChatDeltaReceivedEvent")]
    channels = {"pieces": seen.text, "history": history, "joined deltas": "".join(deltas)}
    for e in events.events:
        if e.class_name() not in LLM_TRACE_EVENTS:
            channels[e.class_name()] = channels.get(e.class_name(), "") + event_text(e)
    for name, text in channels.items():
        for trigger in TRIGGERS:
            assert trigger not in text.lower(), (name, trigger)


def _assert_blocked_turn(
    seen: Seen, engine: GuardedChatEngine, events: Collector, llm: ScriptedLLM, how: str, trip: int
) -> None:
    _assert_no_leak(seen, engine, events)
    streamed = "stream" in how
    blocked = [e for e in _verdicts(events) if e.blocked]
    assert [e.stage for e in blocked] == ["stream" if streamed else "response"]
    assert blocked[0].verdict.level is Level.UNSAFE and blocked[0].verdict.role is Role.RESPONSE
    if streamed:
        # released text is a cleared prefix of the answer; the LLM was stopped right after
        assert llm.answer.startswith(seen.text.removesuffix("\n\n" + DEFAULT_REFUSAL))
        assert 0 <= llm.pulled - (trip + 1) <= AFTER_BLOCK, llm.pulled
        assert blocked[0].verdict.token_index is not None
    # the engine's memory holds the user's turn and the refusal, never the blocked answer
    history = engine.chat_history
    assert [m.role.value for m in history[-2:]] == ["user", "assistant"]
    assert history[-2].content == SAFE_QUERY
    assert str(history[-1].content).endswith(DEFAULT_REFUSAL)


# -- a blocked answer, in every mode and every way of calling ------------------------------------
@pytest.mark.parametrize("mode", MODES)
def test_without_the_wrapper_the_answer_leaks_through_every_channel(
    index, events: Collector, mode: str
) -> None:  # type: ignore[no-untyped-def]
    """The control: the same engine unguarded fails the leak check (so the check can fail)."""
    llm = ScriptedLLM(UNSAFE_ANSWER)
    engine = index.as_chat_engine(chat_mode=mode, llm=llm, similarity_top_k=10)
    seen = Seen(pieces=list(engine.stream_chat(SAFE_QUERY).response_gen))
    assert llm.pulled == len(UNSAFE_ANSWER)  # read to the end
    for channel in ("pieces", "history", "joined deltas"):
        with pytest.raises(AssertionError, match=channel):
            _assert_no_leak(seen, engine, events)
        if channel == "pieces":
            seen.pieces = []
        elif channel == "history":
            engine.reset()


@pytest.mark.parametrize("trigger", sorted(ANSWERS))
@pytest.mark.parametrize("how", ["chat", "stream_chat"])
@pytest.mark.parametrize("mode", MODES)
def test_an_answer_that_turns_unsafe_never_reaches_the_user(
    guard, stream_guard, index, events: Collector, mode: str, how: str, trigger: str
) -> None:  # type: ignore[no-untyped-def]
    answer, trip = ANSWERS[trigger]
    llm = ScriptedLLM(answer)
    engine = _engine(index, mode, llm, guard, stream_guard)
    seen = _turn(engine, how, SAFE_QUERY)
    assert seen.error is not None and seen.error.verdict.role is Role.RESPONSE
    _assert_blocked_turn(seen, engine, events, llm, how, trip)
    if how == "stream_chat":
        assert seen.text  # cleared text came out before the block
        record = seen.response.metadata[METADATA_KEY]
        assert record["blocked"] == "stream" and record["complete"] is True
        assert record["response"]["text_until"] is None  # no flagged text in the metadata
        # the stream is read after stream_chat returned; its verdict still belongs to the turn
        query_event, stream_event = _verdicts(events)
        assert stream_event.span_id is not None and stream_event.span_id == query_event.span_id


@pytest.mark.parametrize("how", ["achat", "astream_chat"])
@pytest.mark.parametrize("mode", MODES)
async def test_async_turns_are_guarded_the_same_way(
    guard, stream_guard, index, events: Collector, mode: str, how: str
) -> None:  # type: ignore[no-untyped-def]
    answer, trip = ANSWERS["hotwire"]
    llm = ScriptedLLM(answer)
    engine = _engine(index, mode, llm, guard, stream_guard)
    seen = await _aturn(engine, how, SAFE_QUERY)
    assert seen.error is not None
    _assert_blocked_turn(seen, engine, events, llm, how, trip)


@pytest.mark.parametrize("how", ["chat", "stream_chat", "achat", "astream_chat"])
@pytest.mark.parametrize("mode", MODES)
async def test_a_refusal_comes_as_a_separate_piece(
    guard, stream_guard, index, events: Collector, mode: str, how: str
) -> None:  # type: ignore[no-untyped-def]
    answer, trip = ANSWERS["hotwire"]
    llm = ScriptedLLM(answer)
    engine = _engine(index, mode, llm, guard, stream_guard, on_unsafe="refuse")
    if how.startswith("a"):
        seen = await _aturn(engine, how, SAFE_QUERY)
    else:
        seen = _turn(engine, how, SAFE_QUERY)
    assert seen.error is None
    _assert_blocked_turn(seen, engine, events, llm, how, trip)
    if "stream" in how:
        *released, last = seen.pieces
        assert released and llm.answer.startswith("".join(released))
        # its own piece, and never glued onto the last released word
        assert last == "\n\n" + DEFAULT_REFUSAL
        assert isinstance(seen.response, StreamingAgentChatResponse)
        assert engine.chat_history[-1].content == ("".join(released) + last).strip()
    else:
        assert seen.pieces == [DEFAULT_REFUSAL]
        assert isinstance(seen.response, AgentChatResponse)
        assert seen.response.metadata[METADATA_KEY]["blocked"] == "response"
    assert [e.action for e in _verdicts(events) if e.blocked] == ["refuse"]


# -- what passes ---------------------------------------------------------------------------------
@pytest.mark.parametrize("how", ["chat", "stream_chat", "achat", "astream_chat"])
@pytest.mark.parametrize("mode", MODES)
async def test_a_safe_turn_passes_whole_and_is_remembered(
    guard, stream_guard, index, events: Collector, mode: str, how: str
) -> None:  # type: ignore[no-untyped-def]
    llm = ScriptedLLM(SAFE_ANSWER)
    engine = _engine(index, mode, llm, guard, stream_guard)
    if how.startswith("a"):
        seen = await _aturn(engine, how, SAFE_QUERY)
    else:
        seen = _turn(engine, how, SAFE_QUERY)
    assert seen.error is None and seen.text == llm.answer
    assert [m.content for m in engine.chat_history] == [SAFE_QUERY, llm.answer]
    assert not any(e.blocked for e in _verdicts(events))
    # a safe stream has no trip, so no stream verdict (as GuardedQueryEngine)
    stages = [e.stage for e in _verdicts(events)]
    assert stages == (["query"] if "stream" in how else ["query", "response"])
    record = seen.response.metadata[METADATA_KEY]
    assert record["blocked"] is None and record["query"]["level"] == "Safe"


# -- what never reaches the LLM or the memory -----------------------------------------------------
@pytest.mark.parametrize("mode", MODES)
async def test_an_unsafe_query_never_reaches_the_llm_nor_the_memory(
    guard, stream_guard, index, events: Collector, mode: str
) -> None:  # type: ignore[no-untyped-def]
    llm = ScriptedLLM(SAFE_ANSWER)
    engine = _engine(index, mode, llm, guard, stream_guard)
    for call in (engine.chat, engine.stream_chat):
        with pytest.raises(UnsafeContentError) as err:
            call(UNSAFE_QUERY)
        assert err.value.verdict.role is Role.PROMPT
    with pytest.raises(UnsafeContentError):
        await engine.achat(UNSAFE_QUERY)
    refusing = _engine(index, mode, llm, guard, stream_guard, on_unsafe="refuse")
    assert str(refusing.chat(UNSAFE_QUERY)) == DEFAULT_REFUSAL
    stream = await refusing.astream_chat(UNSAFE_QUERY)
    assert [p async for p in stream.async_response_gen()] == [DEFAULT_REFUSAL]
    assert llm.prompts == [] and llm.pulled == 0
    assert engine.chat_history == [] and refusing.chat_history == []
    assert {(e.stage, e.blocked) for e in _verdicts(events)} == {("query", True)}


async def test_without_a_stream_guard_the_answer_is_buffered_and_checked_whole(
    guard, index, events: Collector
) -> None:  # type: ignore[no-untyped-def]
    for mode in MODES:
        llm = ScriptedLLM(UNSAFE_ANSWER)
        engine = _engine(index, mode, llm, guard)
        seen = _turn(engine, "stream_chat", SAFE_QUERY)
        assert seen.error is not None and seen.pieces == []
        aseen = await _aturn(engine, "astream_chat", SAFE_QUERY)
        assert aseen.error is not None and aseen.pieces == []
        _assert_no_leak(seen, engine, events)
        ok = _turn(_engine(index, mode, ScriptedLLM(SAFE_ANSWER), guard), "stream_chat", SAFE_QUERY)
        assert ok.pieces == SAFE_ANSWER  # released piece by piece once checked
    blocked = [e for e in _verdicts(events) if e.blocked]
    assert len(blocked) == 2 * len(MODES) and {e.stage for e in blocked} == {"response"}


def test_the_conversation_recovers_after_a_blocked_turn(
    guard, stream_guard, index, events: Collector
) -> None:  # type: ignore[no-untyped-def]
    llm = ScriptedLLM(UNSAFE_ANSWER)
    engine = _engine(index, "condense_plus_context", llm, guard, stream_guard, on_unsafe="refuse")
    first = _turn(engine, "stream_chat", SAFE_QUERY)
    assert first.error is None
    llm.pieces = list(SAFE_ANSWER)
    second = _turn(engine, "stream_chat", "And what about its river?")
    assert second.error is None and second.text == "".join(SAFE_ANSWER)
    # the next turn's prompts (the condensed question's and the answer's) hold no blocked text
    assert len(llm.prompts) == 3
    assert all("hotwire" not in p for p in llm.prompts)
    _assert_no_leak(second, engine, events)


# -- bad options fail at construction -------------------------------------------------------------
def test_bad_arguments_raise_a_configuration_error(guard, stream_guard, index) -> None:  # type: ignore[no-untyped-def]
    inner = index.as_chat_engine(chat_mode="context", llm=ScriptedLLM(SAFE_ANSWER))
    with pytest.raises(ConfigurationError, match="BaseChatEngine"):
        GuardedChatEngine(object(), guard=guard)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="Qwen3Guard"):
        GuardedChatEngine(inner, guard=stream_guard)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="Qwen3StreamGuard"):
        GuardedChatEngine(inner, guard=guard, stream_guard=guard)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="on_unsafe"):
        GuardedChatEngine(inner, guard=guard, on_unsafe="drop")
    with pytest.raises(ConfigurationError, match="refusal"):
        GuardedChatEngine(inner, guard=guard, refusal="{secret}")
    condense = index.as_chat_engine(chat_mode="condense_question", llm=ScriptedLLM(SAFE_ANSWER))
    with pytest.raises(ConfigurationError, match="GuardedQueryEngine"):
        GuardedChatEngine(condense, guard=guard)
