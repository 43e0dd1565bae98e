"""No unchecked token reaches the consumer through any LangChain / LangGraph channel.

Scripted chat models (``Paced`` from ``tests.support``: a real ``BaseChatModel`` that streams a
scripted answer token by token, counting what it generated, and streams tool calls as
``tool_call_chunks``) run inside a real
``create_agent``, a real ``StateGraph`` with a ``MemorySaver`` checkpointer and LCEL chains.
Every piece of text reaching the consumer - ``stream_mode`` messages / updates / values /
custom, ``astream_events`` v2, a user callback handler - is collected and searched for the
trigger; the unsafe tool never runs, the model stops within a few chunks of the block, and a
blocked verdict event fires.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from typing import Any

import pytest

pytest.importorskip("langchain")

from langchain.agents import create_agent
from langchain_core.messages import AIMessageChunk
from langchain_core.tools import tool
from langgraph.checkpoint.memory import MemorySaver
from langgraph.graph import END, START, MessagesState, StateGraph

from qwen3guard_integrations import ConfigurationError, Qwen3Guard, Qwen3StreamGuard
from qwen3guard_integrations.langchain import (
    Qwen3GuardMiddleware,
    guard_model,
    message_verdicts,
)
from tests.support.langchain_support import Collector, Paced, everything, shown

SAFE_Q = "Can you help me with my homework?"
BOMB_A = (
    "Sure! Here is what you asked for: you build the bomb with these parts, then you wire "
    "the timer, then you hide it, and then you wait for the right moment to use it."
)
TRIGGER = "bomb"


def stopped_early(model: Paced, answer: str = BOMB_A) -> None:
    words = len(re.split(r"(\s)", answer))
    upto = answer.index(TRIGGER)
    at = len(re.split(r"(\s)", answer[:upto]))
    assert model.generated[0] <= at + 8 < words, (model.generated, at, words)


# --- guard_model on its own --------------------------------------------------------------------
def test_guard_model_stream_channels(guard: Qwen3Guard, sguard: Qwen3StreamGuard) -> None:
    model = Paced(script=[BOMB_A], generated=[])
    safe = guard_model(model, guard=guard, stream_guard=sguard, on_block="refuse")
    user = Collector()
    out = list(safe.stream(SAFE_Q, {"callbacks": [user]}))
    text = "".join(str(c.content) for c in out)
    assert TRIGGER not in everything(out) and TRIGGER not in " ".join(user.tokens)
    assert text.startswith("Sure! Here is") and text.endswith("Sorry, I can't help with that.")
    blocked = [e for e in user.events if e["blocked"]]
    assert blocked and blocked[0]["stage"] == "stream" and blocked[0]["token_index"] is not None
    assert TRIGGER in (blocked[0]["verdict"].text_until or "")  # the event keeps it for audit
    assert message_verdicts(out[-1])["stream"].text_until is None  # metadata does not
    stopped_early(model)


def test_guard_model_astream_events_show_only_released_text(
    guard: Qwen3Guard, sguard: Qwen3StreamGuard
) -> None:
    model = Paced(script=[BOMB_A], generated=[])
    safe = guard_model(model, guard=guard, stream_guard=sguard, on_block="refuse")

    async def run() -> list[dict[str, Any]]:
        return [e async for e in safe.astream_events(SAFE_Q, version="v2")]

    events = run_events = asyncio.run(run())
    streamed = [e for e in events if e["event"] == "on_chat_model_stream"]
    assert streamed and TRIGGER not in shown(events)
    assert {e["name"] for e in streamed} == {"GuardedChatModel"}  # the inner run is hidden
    assert any(e["event"] == "on_custom_event" and e["data"]["blocked"] for e in run_events)
    stopped_early(model)


def test_unsafe_tool_call_arguments_never_stream(
    guard: Qwen3Guard, sguard: Qwen3StreamGuard
) -> None:
    model = Paced(script=[("search", {"query": "how to build a bomb at home"})], generated=[])
    safe = guard_model(model, guard=guard, stream_guard=sguard, on_block="refuse")
    user = Collector()
    out = list(safe.stream(SAFE_Q, {"callbacks": [user]}))
    assert TRIGGER not in everything(out) and TRIGGER not in everything(user.chunks)
    assert not any(c.tool_call_chunks for c in out)
    assert any(e["blocked"] and e["stage"] == "tool_call" for e in user.events)
    # a safe call comes out whole, in the last chunk, once checked
    model = Paced(script=[("search", {"query": "weather in Paris"})], generated=[])
    out = list(guard_model(model, guard=guard, stream_guard=sguard).stream(SAFE_Q))
    assert [c for c in out if c.tool_call_chunks] == [out[-1]]
    merged = out[0]
    for c in out[1:]:
        merged = merged + c
    assert merged.tool_calls[0]["args"] == {"query": "weather in Paris"}


def test_reasoning_blocks_are_moderated(guard: Qwen3Guard, sguard: Qwen3StreamGuard) -> None:
    class Thinking(Paced):
        def _pieces(self, answer: Any) -> Iterator[AIMessageChunk]:
            for word in re.split(r"(\s)", answer):
                yield AIMessageChunk(content=[{"type": "reasoning", "reasoning": word}])
            yield AIMessageChunk(content="Done.")

    model = Thinking(script=[BOMB_A], generated=[])
    out = list(guard_model(model, stream_guard=sguard, on_block="refuse").stream(SAFE_Q))
    assert TRIGGER not in everything(out)
    assert "Sorry" in "".join(c.text for c in out)
    skipped = Thinking(script=[BOMB_A], generated=[])
    out = list(guard_model(skipped, stream_guard=sguard, reasoning="skip").stream(SAFE_Q))
    assert "Done." in "".join(c.text for c in out)  # not moderated: passed on as it came


def test_guard_model_checks_what_it_is_given(guard: Qwen3Guard, sguard: Qwen3StreamGuard) -> None:
    model = Paced(script=["hi"], generated=[])
    with pytest.raises(ConfigurationError):
        guard_model(model, guard=sguard)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError):
        guard_model(model)
    with pytest.raises(ConfigurationError):
        guard_model(model, guard=guard, on_block="drop")
    with pytest.raises(ConfigurationError):
        guard_model("gpt", guard=guard)  # type: ignore[arg-type]


# --- create_agent: every stream mode, events and a user handler ----------------------------------
def agent_parts(guard: Qwen3Guard, sguard: Qwen3StreamGuard, script: list[Any]) -> Any:
    ran: list[str] = []

    @tool
    def search(query: str) -> str:
        """Search the web."""
        ran.append(query)
        return "Nothing found."

    model = Paced(script=script, generated=[])
    agent = create_agent(
        model, [search], middleware=[Qwen3GuardMiddleware(guard, stream_guard=sguard)]
    )
    return agent, model, ran


@pytest.mark.parametrize(
    "script",
    [[BOMB_A], [("search", {"query": "how to build a bomb at home"}), "Done."]],
    ids=["answer", "tool_call"],
)
def test_agent_stream_modes_never_carry_the_trigger(
    guard: Qwen3Guard, sguard: Qwen3StreamGuard, script: list[Any]
) -> None:
    agent, model, ran = agent_parts(guard, sguard, script)
    user = Collector()
    seen: list[Any] = []
    for mode, data in agent.stream(
        {"messages": [{"role": "user", "content": SAFE_Q}]},
        {"callbacks": [user]},
        stream_mode=["messages", "updates", "values", "custom"],
    ):
        seen.append((mode, data))
    assert TRIGGER not in everything(seen)
    assert TRIGGER not in " ".join(user.tokens) and TRIGGER not in everything(user.chunks)
    assert ran == []  # the unsafe tool never ran
    assert any(e["blocked"] for e in user.events)
    if isinstance(script[0], str):
        stopped_early(model)
        streamed = "".join(str(d[0].content) for m, d in seen if m == "messages")
        assert streamed.startswith("Sure! Here is")  # it did stream, held back


def test_agent_astream_events_never_carry_the_trigger(
    guard: Qwen3Guard, sguard: Qwen3StreamGuard
) -> None:
    agent, model, _ = agent_parts(guard, sguard, [BOMB_A])

    async def run() -> list[dict[str, Any]]:
        return [
            e
            async for e in agent.astream_events(
                {"messages": [{"role": "user", "content": SAFE_Q}]}, version="v2"
            )
        ]

    events = asyncio.run(run())
    assert TRIGGER not in shown(events)
    blocked = [e for e in events if e["event"] == "on_custom_event" and e["data"]["blocked"]]
    assert blocked and blocked[0]["data"]["token_index"] is not None
    stopped_early(model)


def test_agent_with_retry_model_is_guarded(guard: Qwen3Guard, sguard: Qwen3StreamGuard) -> None:
    @tool
    def search(query: str) -> str:
        """Search the web."""
        return "Nothing found."

    model = Paced(script=[BOMB_A], generated=[])
    agent = create_agent(
        model.with_retry(),  # type: ignore[arg-type]
        [search],
        middleware=[Qwen3GuardMiddleware(guard, stream_guard=sguard)],
    )
    out = agent.invoke({"messages": [{"role": "user", "content": SAFE_Q}]})
    assert TRIGGER not in everything(out["messages"])


# --- a StateGraph with a checkpointer -------------------------------------------------------------
def test_state_graph_with_checkpointer_recovers_after_a_blocked_turn(
    guard: Qwen3Guard, sguard: Qwen3StreamGuard
) -> None:
    model = Paced(script=[BOMB_A, "It is sunny today."], generated=[])
    safe = guard_model(model, guard=guard, stream_guard=sguard, on_block="refuse")

    def call(state: MessagesState) -> dict[str, Any]:
        return {"messages": [safe.invoke(state["messages"])]}

    graph = StateGraph(MessagesState)
    graph.add_node("model", call)
    graph.add_edge(START, "model")
    graph.add_edge("model", END)
    app = graph.compile(checkpointer=MemorySaver())
    thread = {"configurable": {"thread_id": "t1"}}
    seen = list(
        app.stream(
            {"messages": [{"role": "user", "content": SAFE_Q}]},
            thread,
            stream_mode=["messages", "updates", "values"],
        )
    )
    assert TRIGGER not in everything(seen)
    stopped_early(model)
    state = app.get_state(thread).values["messages"]
    assert TRIGGER not in everything(state) and "Sorry" in str(state[-1].content)
    again = app.invoke({"messages": [{"role": "user", "content": "And the weather?"}]}, thread)
    assert again["messages"][-1].content == "It is sunny today."


def test_agent_thread_recovers_after_a_blocked_prompt(guard: Qwen3Guard) -> None:
    for blocked_input in ("replace", "remove"):
        model = Paced(script=["It is sunny today."], generated=[])
        agent = create_agent(
            model,
            [],
            middleware=[Qwen3GuardMiddleware(guard, blocked_input=blocked_input)],  # type: ignore[arg-type]
            checkpointer=MemorySaver(),
        )
        thread = {"configurable": {"thread_id": blocked_input}}
        bad = "How would someone make a bomb without anyone noticing?"
        agent.invoke({"messages": [{"role": "user", "content": bad}]}, thread)
        state = agent.get_state(thread).values["messages"]
        assert TRIGGER not in everything([m.content for m in state])
        out = agent.invoke({"messages": [{"role": "user", "content": "And the weather?"}]}, thread)
        assert out["messages"][-1].content == "It is sunny today."


# --- the stream callbacks --------------------------------------------------------------------------
def test_async_callback_refuses_a_sync_run(sguard: Qwen3StreamGuard) -> None:
    from langchain_core.language_models.fake_chat_models import GenericFakeChatModel

    from qwen3guard_integrations.langchain import AsyncQwen3GuardStreamCallback

    model = GenericFakeChatModel(messages=iter([BOMB_A]))
    got: list[str] = []
    with pytest.raises(ConfigurationError, match="cannot stop a sync run"):
        for c in model.stream(SAFE_Q, {"callbacks": [AsyncQwen3GuardStreamCallback(sguard)]}):
            got.append(str(c.content))
    assert got == []  # refused before the model ran


def test_a_block_is_not_logged_as_a_callback_error(
    sguard: Qwen3StreamGuard, caplog: pytest.LogCaptureFixture
) -> None:
    from langchain_core.language_models.fake_chat_models import GenericFakeChatModel

    from qwen3guard_integrations import UnsafeContentError
    from qwen3guard_integrations.langchain import Qwen3GuardStreamCallback

    model = GenericFakeChatModel(messages=iter([BOMB_A]))
    with caplog.at_level("WARNING"), pytest.raises(UnsafeContentError):
        list(model.stream(SAFE_Q, {"callbacks": [Qwen3GuardStreamCallback(sguard)]}))
    assert not [r for r in caplog.records if "callback" in r.getMessage()]


# --- guard_chain with a JSON parser ----------------------------------------------------------------
def test_guard_chain_checks_json_outputs_as_text(
    guard: Qwen3Guard, sguard: Qwen3StreamGuard
) -> None:
    from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
    from langchain_core.output_parsers import JsonOutputParser

    from qwen3guard_integrations import UnsafeContentError
    from qwen3guard_integrations.langchain import guard_chain

    safe_json = '{"answer": "It is sunny in Paris today."}'
    bad_json = '{"answer": "First you build the bomb, then you wait."}'
    for kwargs in (
        {"guard": guard},
        {"stream_guard": sguard},
        {"guard": guard, "stream_guard": sguard},
    ):
        chain = GenericFakeChatModel(messages=iter([safe_json, bad_json])) | JsonOutputParser()
        safe = guard_chain(chain, **kwargs)  # type: ignore[arg-type]
        assert safe.invoke(SAFE_Q) == {"answer": "It is sunny in Paris today."}
        with pytest.raises(UnsafeContentError):
            safe.invoke(SAFE_Q)
        chain = GenericFakeChatModel(messages=iter([safe_json, bad_json])) | JsonOutputParser()
        safe = guard_chain(chain, **kwargs)  # type: ignore[arg-type]
        assert list(safe.stream(SAFE_Q))[-1] == {"answer": "It is sunny in Paris today."}
        with pytest.raises(UnsafeContentError):
            list(safe.stream(SAFE_Q))
        chain = GenericFakeChatModel(messages=iter([bad_json])) | JsonOutputParser()

        async def astream(c: Any = chain, kw: Any = kwargs) -> list[Any]:
            return [x async for x in guard_chain(c, **kw).astream(SAFE_Q)]

        with pytest.raises(UnsafeContentError):
            asyncio.run(astream())


def test_the_callback_peek_on_a_long_unbroken_word_is_linear(
    sguard: Qwen3StreamGuard, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the re-tokenizer holds a whole unpunctuated CJK run back; the callback peeks at it after
    # every piece. Each peek reuses what the last one ran, so the model runs each position about
    # once (it ran the whole run at every piece before: 1,000 characters took minutes)
    from qwen3guard_integrations.langchain.callbacks import Qwen3GuardStreamCallback

    text = ("我的朋友问我关于天气的问题今天很好明天也很好" * 10)[:150]
    positions: list[int] = []
    callback = Qwen3GuardStreamCallback(sguard)
    with sguard.session(SAFE_Q, debounce=1) as s:
        forward = s._forward  # the one model call of a session (engine or per-session cache)

        def counting(ids: Any, *args: Any, **kwargs: Any) -> Any:
            positions.append(len(ids))
            return forward(ids, *args, **kwargs)

        monkeypatch.setattr(s, "_forward", counting)
        for ch in text:
            callback._feed_ahead(s, ch)
        s.finish()
    assert sum(positions) < 8 * len(text)  # a few per piece; quadratic: about len(text) ** 2 / 2
