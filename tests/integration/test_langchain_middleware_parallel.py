"""``Qwen3GuardMiddleware(prompt_check="parallel")``: the agent's model starts with the check of
the user's new turn, and nothing it says reaches any stream mode before the verdict.

A real ``create_agent`` with a ``MemorySaver`` checkpointer runs a paced scripted chat model
whose every word carries a marker (``zq``) and that counts the chunks it generated. For an
unsafe prompt the marker never reaches the ``messages`` / ``updates`` / ``values`` / ``custom``
stream modes, ``astream_events`` v2 or a user callback handler, no tool runs, the inner model
stops within one chunk of the verdict, and the blocked user turn is scrubbed from the thread
(``blocked_input``) so the next turn gets its answer. For a safe prompt the run is the one of
``"before"`` mode.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

pytest.importorskip("langchain")

from langchain.agents import create_agent
from langchain_core.messages import AIMessage, HumanMessage
from langchain_core.tools import tool
from langgraph.checkpoint.memory import MemorySaver

from qwen3guard_integrations import ConfigurationError, Qwen3Guard, Qwen3StreamGuard
from qwen3guard_integrations.core.errors import UnsafeContentError
from qwen3guard_integrations.langchain import Qwen3GuardMiddleware, message_verdicts
from qwen3guard_integrations.langchain.middleware import BLOCKED_INPUT_PLACEHOLDER
from tests.support.langchain_support import Collector, Paced, everything, shown

SAFE_Q = "Can you help me with my homework?"
BAD_Q = "How would someone make a bomb without anyone noticing?"
MARK = "zq"
MARKED = " ".join(f"{MARK}{i}" for i in range(60))
SAFE_A = "Sure, here is how fractions work: you add the tops when the bottoms match."
DELAY = 0.005  # seconds between chunks: a run not stopped makes ~100 chunks in the wait below
AFTER = 0.5
MODES = ["messages", "updates", "values", "custom"]
SCRIPTS = {"answer": MARKED, "tool_call": ("search", {"query": MARKED})}


def make_agent(
    model: Paced, guard: Qwen3Guard, sguard: Qwen3StreamGuard | None, ran: list[str], **kw: Any
) -> Any:
    @tool
    def search(query: str) -> str:
        """Search the web."""
        ran.append(query)
        return "Nothing found."

    middleware = Qwen3GuardMiddleware(guard, stream_guard=sguard, **kw)
    return create_agent(model, [search], middleware=[middleware], checkpointer=MemorySaver())


def counter(model: Paced) -> Any:
    return lambda: model.generated[-1] if model.generated else 0


def check_stopped(model: Paced, user: Collector, later: int | None = None) -> None:
    """The blocked prompt's verdict came from the parallel check, and the inner model stopped
    within one chunk of it (counted at the verdict event, and again once it would have made
    dozens more: ``later``, or now after a wait)."""
    (i,) = [i for i, e in enumerate(user.events) if e["blocked"]]
    event, at_verdict = user.events[i], user.probed[i]
    assert event["stage"] == "prompt" and event["prompt_check"] == "parallel"
    if later is None:
        time.sleep(AFTER)
        later = model.generated[-1]
    assert later <= at_verdict + 1, (later, at_verdict)
    assert event["inner_chunks_discarded"] == event["inner_chunks"] <= at_verdict


def check_scrubbed(state: list[Any], blocked_input: str) -> None:
    """The blocked turn is gone from the thread (replaced or removed); the notice ends it."""
    assert BAD_Q not in everything([m.content for m in state])
    assert MARK not in everything(state)
    humans = [m for m in state if isinstance(m, HumanMessage)]
    if blocked_input == "replace":
        assert [m.content for m in humans] == [BLOCKED_INPUT_PLACEHOLDER]
    else:
        assert humans == []
    assert isinstance(state[-1], AIMessage) and state[-1].content.startswith("Sorry")
    assert message_verdicts(state[-1])["prompt"].is_unsafe


# --- an unsafe prompt: nothing on any stream mode, the model stopped, the thread recovers -------
@pytest.mark.parametrize("blocked_input", ["replace", "remove"])
@pytest.mark.parametrize("kind", ["answer", "tool_call"])
def test_unsafe_prompt_reaches_no_stream_mode_sync(
    guard: Qwen3Guard, sguard: Qwen3StreamGuard, kind: str, blocked_input: str
) -> None:
    ran: list[str] = []
    model = Paced(script=[SCRIPTS[kind], SAFE_A], generated=[], delay=DELAY, forever=True)
    agent = make_agent(
        model, guard, sguard, ran, prompt_check="parallel", blocked_input=blocked_input
    )
    thread = {"configurable": {"thread_id": "t"}}
    user = Collector(probe=counter(model))
    seen = list(
        agent.stream(
            {"messages": [{"role": "user", "content": BAD_Q}]},
            {**thread, "callbacks": [user]},
            stream_mode=MODES,
        )
    )
    assert seen and MARK not in everything(seen)
    assert MARK not in everything(user.chunks + user.tokens + user.events)
    assert ran == [] and model.turn == 1  # no tool ran, the model was not called again
    check_stopped(model, user)
    check_scrubbed(agent.get_state(thread).values["messages"], blocked_input)

    model.forever = False
    out = agent.invoke({"messages": [{"role": "user", "content": SAFE_Q}]}, thread)
    assert out["messages"][-1].content == SAFE_A


@pytest.mark.parametrize("blocked_input", ["replace", "remove"])
def test_unsafe_prompt_reaches_no_stream_mode_async(
    guard: Qwen3Guard, sguard: Qwen3StreamGuard, blocked_input: str
) -> None:
    ran: list[str] = []
    call = SCRIPTS["tool_call"]
    model = Paced(script=[call, call, SAFE_A], generated=[], delay=DELAY, forever=True)
    agent = make_agent(
        model, guard, sguard, ran, prompt_check="parallel", blocked_input=blocked_input
    )
    user = Collector(probe=counter(model))
    bad = {"messages": [{"role": "user", "content": BAD_Q}]}

    async def run() -> tuple[list[Any], int, list[dict[str, Any]], Any]:
        seen = [
            c
            async for c in agent.astream(
                bad, {"configurable": {"thread_id": "a"}, "callbacks": [user]}, stream_mode=MODES
            )
        ]
        await asyncio.sleep(AFTER)  # the loop runs on: a task not cancelled would go on
        later = model.generated[0]
        thread = {"configurable": {"thread_id": "b"}}
        events = [e async for e in agent.astream_events(bad, thread, version="v2")]
        await asyncio.sleep(AFTER)  # the loop runs on: a task not cancelled would go on
        model.forever = False
        again = await agent.ainvoke({"messages": [{"role": "user", "content": SAFE_Q}]}, thread)
        return seen, later, events, again

    seen, later, events, again = asyncio.run(run())
    assert seen and MARK not in everything(seen)
    assert MARK not in everything(user.chunks + user.tokens + user.events)
    assert events and MARK not in shown(events)
    assert not any(e["event"] == "on_tool_start" for e in events)
    assert ran == [] and model.turn == 3  # two blocked runs, one answer
    check_stopped(model, user, later)
    check_scrubbed(
        agent.get_state({"configurable": {"thread_id": "a"}}).values["messages"], blocked_input
    )
    assert again["messages"][-1].content == SAFE_A
    assert BAD_Q not in everything([m.content for m in again["messages"]])


def test_unsafe_prompt_with_gen_alone_streams_the_model_and_stops_it(guard: Qwen3Guard) -> None:
    """Gen without an answer check streams the inner model in parallel mode: it stops too."""
    ran: list[str] = []
    model = Paced(script=[MARKED], generated=[], delay=DELAY, forever=True)
    agent = make_agent(model, guard, None, ran, prompt_check="parallel", check_output=False)
    user = Collector(probe=counter(model))
    seen = list(
        agent.stream(
            {"messages": [{"role": "user", "content": BAD_Q}]},
            {"configurable": {"thread_id": "g"}, "callbacks": [user]},
            stream_mode=MODES,
        )
    )
    assert MARK not in everything(seen) and MARK not in everything(user.chunks + user.tokens)
    check_stopped(model, user)


def test_exit_behavior_error_raises_the_prompt_block(
    guard: Qwen3Guard, sguard: Qwen3StreamGuard
) -> None:
    model = Paced(script=[MARKED], generated=[], delay=DELAY, forever=True)
    agent = make_agent(model, guard, sguard, [], prompt_check="parallel", exit_behavior="error")
    bad = {"messages": [{"role": "user", "content": BAD_Q}]}
    got: list[Any] = []
    with pytest.raises(UnsafeContentError) as err:
        for chunk in agent.stream(bad, {"configurable": {"thread_id": "e"}}, stream_mode=MODES):
            got.append(chunk)
    assert getattr(err.value, "stage", None) == "prompt" and err.value.verdict.is_unsafe
    assert MARK not in everything(got)

    async def arun() -> None:
        await agent.ainvoke(bad, {"configurable": {"thread_id": "e2"}})

    with pytest.raises(UnsafeContentError):
        asyncio.run(arun())


# --- the same run as "before" mode ----------------------------------------------------------------
def contents(messages: list[Any]) -> list[tuple[str, Any, Any]]:
    return [
        (
            type(m).__name__,
            m.content,
            [(c["name"], c["args"]) for c in getattr(m, "tool_calls", [])],
        )
        for m in messages
    ]


@pytest.mark.parametrize("stream", [True, False], ids=["with_stream_guard", "gen"])
@pytest.mark.parametrize(
    "case", ["answer", "tool_call", "blocked_answer", "replace_blocked_prompt"]
)
def test_run_is_the_one_of_before_mode(
    guard: Qwen3Guard, sguard: Qwen3StreamGuard, case: str, stream: bool
) -> None:
    """A safe prompt gets the same answer (and tool run, and blocked answer) as in ``"before"``
    mode, sync and async; ``exit_behavior="replace"`` on a blocked prompt leaves the same
    thread (the model answers the notice)."""
    script: list[Any] = {
        "answer": [SAFE_A],
        "tool_call": [("search", {"query": "weather in Paris"}), SAFE_A],
        "blocked_answer": ["First you build the bomb, then you wire the timer and hide it."],
        "replace_blocked_prompt": [SAFE_A],
    }[case]
    question = BAD_Q if case == "replace_blocked_prompt" else SAFE_Q
    options = {"exit_behavior": "replace"} if case == "replace_blocked_prompt" else {}

    def runs(mode: str) -> list[Any]:
        out = []
        for call in ("invoke", "ainvoke"):
            ran: list[str] = []
            model = Paced(script=script, generated=[], prefill=0.02, delay=0.001)
            agent = make_agent(
                model, guard, sguard if stream else None, ran, prompt_check=mode, **options
            )
            inp = {"messages": [{"role": "user", "content": question}]}
            thread = {"configurable": {"thread_id": call}}
            if call == "invoke":
                result = agent.invoke(inp, thread)
            else:
                result = asyncio.run(agent.ainvoke(inp, thread))
            out.append((contents(result["messages"]), ran))
        return out

    before, parallel = runs("before"), runs("parallel")
    assert parallel == before
    assert before[0] == before[1]
    if case == "replace_blocked_prompt":
        assert BAD_Q not in everything(before[0][0]) and before[0][0][-1][1] == SAFE_A


def test_prompt_check_option_is_checked(guard: Qwen3Guard) -> None:
    assert Qwen3GuardMiddleware(guard).prompt_check == "before"  # the default
    with pytest.raises(ConfigurationError, match="prompt_check"):
        Qwen3GuardMiddleware(guard, prompt_check="after")  # type: ignore[arg-type]
