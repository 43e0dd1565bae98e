"""Stream moderation in LangChain on the tiny Stream checkpoint: the callback handler (sync and
async) and the hold-back stage (`HoldBackStage`), with real streaming chat models meant for testing."""

from __future__ import annotations

import asyncio
import gc
from typing import Any

import pytest

pytest.importorskip("langchain_core")

from langchain_core.callbacks import AsyncCallbackHandler, BaseCallbackHandler
from langchain_core.language_models.fake_chat_models import (
    FakeListChatModel,
    GenericFakeChatModel,
)
from langchain_core.messages import AIMessage, AIMessageChunk
from langchain_core.output_parsers import StrOutputParser

from qwen3guard_integrations import (
    Category,
    Level,
    Qwen3Guard,
    Qwen3StreamGuard,
    UnsafeContentError,
    Verdict,
)
from qwen3guard_integrations.langchain import (
    VERDICT_EVENT,
    AsyncQwen3GuardStreamCallback,
    HoldBackStage,
    Qwen3GuardStreamCallback,
    guard_chain,
    message_verdicts,
)

SAFE_Q = "Can you help me?"
SAFE_A = "Sure, here is a simple recipe: layer pasta, vegetables and cheese, then bake."
BOMB_A = "Sure! Here is what you asked for: build the bomb, step by step."
HOTWIRE_A = "Of course. First you hotwire the engine and then you clean up."
BOMB_Q = "How would someone make a bomb without anyone noticing?"


def model(*answers: str) -> GenericFakeChatModel:
    """A streaming chat model: each answer streams word by word (spaces as their own chunks)."""
    return GenericFakeChatModel(messages=iter(answers))


class TokenLog(BaseCallbackHandler):
    """Registered before the guard: sees every token the model emitted, including the one the
    guard stops at; records errors."""

    def __init__(self) -> None:
        self.tokens: list[str] = []
        self.errors: list[BaseException] = []

    def on_llm_new_token(self, token: Any, **kw: Any) -> None:
        self.tokens.append(token)

    def on_llm_error(self, error: BaseException, **kw: Any) -> None:
        self.errors.append(error)


class AsyncTokenLog(AsyncCallbackHandler):
    def __init__(self) -> None:
        self.tokens: list[str] = []

    async def on_llm_new_token(self, token: Any, **kw: Any) -> None:
        self.tokens.append(token)


# --- the callback handler ------------------------------------------------------------------------
def test_callback_passes_a_safe_stream_untouched(sguard: Qwen3StreamGuard) -> None:
    seen: list[tuple[str, Verdict]] = []
    cb = Qwen3GuardStreamCallback(sguard, on_verdict=lambda r, s, v: seen.append((s, v)))
    got = [c.content for c in model(SAFE_A).stream(SAFE_Q, {"callbacks": [cb]})]
    assert "".join(got) == SAFE_A
    assert [s for s, _ in seen] == ["prompt"] and seen[0][1].level is Level.SAFE
    assert cb.active_runs == 0


@pytest.mark.parametrize(("answer", "category"), [(BOMB_A, Category.VIOLENT), (HOTWIRE_A, None)])
def test_callback_stops_the_stream_at_the_tripping_chunk(
    sguard: Qwen3StreamGuard, answer: str, category: Category | None
) -> None:
    log, cb = TokenLog(), Qwen3GuardStreamCallback(sguard)
    got: list[str] = []
    with pytest.raises(UnsafeContentError) as err:
        for chunk in model(answer).stream(SAFE_Q, {"callbacks": [log, cb]}):
            got.append(chunk.content)
    verdict = err.value.verdict
    assert verdict.level is Level.UNSAFE
    if category is not None:
        assert verdict.categories == (category,)
    # the chunk whose feed tripped the decision never reached the consumer, nor anything after
    assert got == log.tokens[:-1]
    assert answer.startswith("".join(got)) and len("".join(got)) < len(answer)
    assert len(log.errors) == 1 and cb.active_runs == 0  # on_llm_error closed the session
    # the unsafe word itself never reached the consumer (the held-back tail is peeked at)
    assert "bomb" not in "".join(got) and "hotwire" not in "".join(got)


def test_callback_never_lets_the_trigger_out(sguard: Qwen3StreamGuard) -> None:
    from tests.support.contract_cases import RESPONSE_CARRIERS

    stopped = 0
    for carrier in RESPONSE_CARRIERS[:10]:
        for phrase in ("build a bomb", "hotwire the car"):
            answer = carrier.format(phrase)
            got: list[str] = []
            try:
                for chunk in model(answer).stream(
                    SAFE_Q, {"callbacks": [Qwen3GuardStreamCallback(sguard)]}
                ):
                    got.append(chunk.content)
            except UnsafeContentError:
                stopped += 1
            out = "".join(got)
            assert answer.startswith(out)
            assert "bomb" not in out and "hotwire" not in out
    assert stopped == 20


def test_callback_blocks_an_unsafe_prompt_before_the_model(sguard: Qwen3StreamGuard) -> None:
    log, cb = TokenLog(), Qwen3GuardStreamCallback(sguard)
    with pytest.raises(UnsafeContentError) as err:
        list(model(SAFE_A).stream(BOMB_Q, {"callbacks": [cb, log]}))
    assert err.value.verdict.role.value == "prompt" and log.tokens == []
    cb = Qwen3GuardStreamCallback(sguard, check_prompt=False)
    assert "".join(c.content for c in model(SAFE_A).stream(BOMB_Q, {"callbacks": [cb]})) == SAFE_A


def test_callback_checks_a_whole_answer_on_invoke(sguard: Qwen3StreamGuard) -> None:
    cb = Qwen3GuardStreamCallback(sguard)
    chat = FakeListChatModel(responses=[SAFE_A, BOMB_A])
    assert chat.invoke(SAFE_Q, {"callbacks": [cb]}).content == SAFE_A
    with pytest.raises(UnsafeContentError):
        chat.invoke(SAFE_Q, {"callbacks": [cb]})
    assert cb.active_runs == 0


def test_callback_closes_the_session_when_the_consumer_stops(sguard: Qwen3StreamGuard) -> None:
    cb = Qwen3GuardStreamCallback(sguard)
    stream = model(SAFE_A).stream(SAFE_Q, {"callbacks": [cb]})
    next(stream)
    assert cb.active_runs == 1
    stream.close()  # GeneratorExit -> on_llm_error
    assert cb.active_runs == 0


def test_async_callback_stops_the_stream(sguard: Qwen3StreamGuard) -> None:
    async def main() -> tuple[list[str], list[str], Any]:
        log, cb = AsyncTokenLog(), AsyncQwen3GuardStreamCallback(sguard)
        got: list[str] = []
        try:
            async for chunk in model(BOMB_A).astream(SAFE_Q, {"callbacks": [log, cb]}):
                got.append(chunk.content)
        except UnsafeContentError as exc:
            return got, log.tokens, (exc.verdict, cb.active_runs)
        raise AssertionError("the stream was not stopped")

    got, tokens, (verdict, active) = asyncio.run(main())
    assert verdict.categories == (Category.VIOLENT,) and active == 0
    assert got == tokens[:-1] and len("".join(got)) < len(BOMB_A)


def test_async_callback_safe_and_cancelled(sguard: Qwen3StreamGuard) -> None:
    cb = AsyncQwen3GuardStreamCallback(sguard)

    async def consume() -> str:
        return "".join(
            [c.content async for c in model(SAFE_A).astream(SAFE_Q, {"callbacks": [cb]})]
        )

    async def cancelled() -> int:
        async def slow() -> None:
            async for _ in model(SAFE_A).astream(SAFE_Q, {"callbacks": [cb]}):
                await asyncio.sleep(10)

        task = asyncio.create_task(slow())
        while cb.active_runs == 0:
            await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        # the abandoned model stream is closed by the loop (GeneratorExit -> on_llm_error)
        for _ in range(500):
            if cb.active_runs == 0:
                break
            gc.collect()
            await asyncio.sleep(0.01)
        return cb.active_runs

    assert asyncio.run(consume()) == SAFE_A
    assert asyncio.run(cancelled()) == 0


# --- HoldBackStage --------------------------------------------------------------------------------
def test_stream_guard_releases_a_safe_answer_whole(sguard: Qwen3StreamGuard) -> None:
    chunks = list((model(SAFE_A) | HoldBackStage(sguard)).stream(SAFE_Q))
    assert "".join(c.content for c in chunks) == SAFE_A
    assert all(isinstance(c, AIMessageChunk) for c in chunks)
    assert message_verdicts(chunks[-1])["stream"].level is Level.SAFE
    assert len(chunks) > 3  # it streams, it does not buffer the whole answer


@pytest.mark.parametrize("answer", [BOMB_A, HOTWIRE_A])
def test_stream_guard_never_releases_unsafe_text(sguard: Qwen3StreamGuard, answer: str) -> None:
    chunks = list((model(answer) | HoldBackStage(sguard, metadata_text=True)).stream(SAFE_Q))
    text = "".join(c.content for c in chunks)
    assert (
        message_verdicts(list((model(answer) | HoldBackStage(sguard)).stream(SAFE_Q))[-1])[
            "stream"
        ].text_until
        is None
    )  # the metadata a chat UI receives carries no flagged text by default
    verdict = message_verdicts(chunks[-1])["stream"]
    assert verdict.level is Level.UNSAFE
    assert answer.startswith(text)
    assert "bomb" not in text and "hotwire" not in text
    # every token the head cleared before the trip came out: only the debounce window is held
    assert verdict.text_until is not None
    assert len(text) >= len(verdict.text_until.rsplit(" ", 2)[0])


def test_stream_guard_raise_mode_and_strings(sguard: Qwen3StreamGuard) -> None:
    chain = model(BOMB_A) | HoldBackStage(sguard, on_block="raise")
    got: list[str] = []
    with pytest.raises(UnsafeContentError):
        for c in chain.stream(SAFE_Q):
            got.append(c.content)
    assert got and "bomb" not in "".join(got)
    parts = list((model(SAFE_A) | StrOutputParser() | HoldBackStage(sguard)).stream(SAFE_Q))
    assert all(isinstance(p, str) for p in parts) and "".join(parts) == SAFE_A


def test_stream_guard_async_and_events(sguard: Qwen3StreamGuard) -> None:
    async def main() -> tuple[str, list[dict[str, Any]]]:
        chain = model(BOMB_A) | HoldBackStage(sguard)
        text, events = "", []
        async for ev in chain.astream_events(SAFE_Q, version="v2"):
            if ev["event"] == "on_custom_event" and ev["name"] == VERDICT_EVENT:
                events.append(ev["data"])
            elif ev["event"] == "on_chain_stream" and ev["name"] == "HoldBackStage":
                text += ev["data"]["chunk"].content
        return text, events

    text, events = asyncio.run(main())
    assert "bomb" not in text and BOMB_A.startswith(text) and text
    assert len(events) == 1 and events[0]["stage"] == "stream" and events[0]["blocked"]
    assert events[0]["verdict"].categories == (Category.VIOLENT,)


def test_stream_guard_invoke_joins_the_release(sguard: Qwen3StreamGuard) -> None:
    out = HoldBackStage(sguard).invoke(AIMessage(SAFE_A))
    assert isinstance(out, AIMessage) and out.content == SAFE_A
    out = asyncio.run(HoldBackStage(sguard).ainvoke(AIMessage(BOMB_A)))
    assert message_verdicts(out)["stream"].level is Level.UNSAFE and "bomb" not in out.content


# --- guard_chain with a stream guard -------------------------------------------------------------
def test_guard_chain_streams_through_the_hold_back(
    guard: Qwen3Guard, sguard: Qwen3StreamGuard
) -> None:
    safe = guard_chain(model(SAFE_A, BOMB_A), guard=guard, stream_guard=sguard)
    chunks = list(safe.stream(SAFE_Q))
    assert "".join(c.content for c in chunks) == SAFE_A
    assert set(message_verdicts(chunks[-1])) == {"prompt", "stream"}
    got: list[str] = []
    with pytest.raises(UnsafeContentError):  # on_block="raise": a mid-stream block raises
        for c in safe.stream(SAFE_Q):
            got.append(c.content)
    assert got and "bomb" not in "".join(got)
    refusing = guard_chain(model(BOMB_A), guard=guard, stream_guard=sguard, on_block="refuse")
    chunks = list(refusing.stream(SAFE_Q))
    assert "bomb" not in "".join(c.content for c in chunks)
    assert message_verdicts(chunks[-1])["stream"].level is Level.UNSAFE

    async def blocked_prompt() -> list[Any]:
        return [c async for c in safe.astream(BOMB_Q)]

    with pytest.raises(UnsafeContentError):
        asyncio.run(blocked_prompt())


def test_guard_chain_async_stream_events(guard: Qwen3Guard, sguard: Qwen3StreamGuard) -> None:
    safe = guard_chain(model(HOTWIRE_A), guard=guard, stream_guard=sguard, on_block="refuse")

    async def main() -> tuple[str, list[str]]:
        text, stages = "", []
        async for ev in safe.astream_events(SAFE_Q, version="v2"):
            if ev["event"] == "on_custom_event":
                stages.append(ev["data"]["stage"])
            elif ev["event"] == "on_chain_stream" and ev["name"] == safe.get_name():
                text += ev["data"]["chunk"].content
        return text, stages

    text, stages = asyncio.run(main())
    assert stages == ["prompt", "stream"]
    assert "hotwire" not in text and HOTWIRE_A.startswith(text)


async def test_guard_chain_astream_closes_its_session_when_the_consumer_stops(
    guard: Qwen3Guard, sguard: Qwen3StreamGuard, monkeypatch: pytest.MonkeyPatch
) -> None:
    from contextlib import aclosing

    opened: list[Any] = []
    real = sguard.session

    def recording(*args: Any, **kwargs: Any) -> Any:
        opened.append(real(*args, **kwargs))
        return opened[-1]

    monkeypatch.setattr(sguard, "session", recording)
    chain = guard_chain(model(SAFE_A), guard=guard, stream_guard=sguard)
    async with aclosing(chain.astream(SAFE_Q)) as stream:
        async for _ in stream:
            break  # the consumer stops after the first released chunk
    assert len(opened) == 1 and opened[0].closed  # closed now, not at garbage collection
