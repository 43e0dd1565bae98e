"""``guard_model(prompt_check="parallel")``: the inner model starts with the prompt check, and
nothing it says reaches any channel before the verdict.

A paced scripted chat model (a real ``BaseChatModel``, sync and async streams) makes every word
of its answer carry a marker (``zq``) and counts the chunks it generated. For an unsafe prompt
the marker never reaches the caller, a user callback handler, ``astream_events`` v2 or an
agent's stream modes; the inner model stops within one chunk of the verdict (counted at the
verdict event and again after the run, once it would have made dozens more); the blocked
verdict event and the refusal say how many chunks were thrown away. For a safe prompt the
answer is the one of ``"before"`` mode.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

pytest.importorskip("langchain")

from langchain.agents import create_agent
from langchain_core.tools import tool

from qwen3guard_integrations import ConfigurationError, Qwen3Guard, Qwen3StreamGuard
from qwen3guard_integrations.core.errors import UnsafeContentError
from qwen3guard_integrations.langchain import guard_model, message_verdicts
from qwen3guard_integrations.langchain.prompt_check import COST_KEY
from tests.support.langchain_support import Collector, Paced, everything, shown

SAFE_Q = "Can you help me with my homework?"
BAD_Q = "How would someone make a bomb without anyone noticing?"
MARK = "zq"
MARKED = " ".join(f"{MARK}{i}" for i in range(60))  # every word is model text we can find
SAFE_A = "Sure, here is how fractions work: you add the tops when the bottoms match."
DELAY = 0.005  # seconds between chunks: a run not stopped makes ~100 chunks in the wait below
AFTER = 0.5


def guards(which: str, guard: Qwen3Guard, sguard: Qwen3StreamGuard) -> dict[str, Any]:
    return {
        "gen": {"guard": guard},
        "stream": {"stream_guard": sguard},
        "both": {"guard": guard, "stream_guard": sguard},
    }[which]


def counter(model: Paced) -> Any:
    return lambda: model.generated[-1] if model.generated else 0


def blocked_event(user: Collector) -> tuple[dict[str, Any], Any]:
    (i,) = [i for i, e in enumerate(user.events) if e["blocked"]]
    return user.events[i], user.probed[i]


def check_stopped(model: Paced, user: Collector, *, streamed: bool = True) -> None:
    """Cancelled within one chunk of the verdict; the event counts what was thrown away (the
    chunks of a streamed inner model, or the invoke that was under way)."""
    event, at_verdict = blocked_event(user)
    assert event["stage"] == "prompt" and event["prompt_check"] == "parallel"
    time.sleep(AFTER)  # a model still running would make ~AFTER / DELAY more chunks
    assert model.generated[-1] <= at_verdict + 1, (model.generated, at_verdict)
    assert event["inner_chunks_discarded"] == event["inner_chunks"] <= at_verdict
    if streamed:
        assert event["inner_chunks"] >= 1
    else:  # an ainvoke: no chunk came out of it, the call itself was cancelled
        assert event["inner_chunks"] == 0 and event["inner_read_in_flight"] is True


SCRIPTS = {"answer": MARKED, "tool_call": ("search", {"query": MARKED})}


# --- an unsafe prompt: nothing on any channel, the inner model stopped ----------------------------
@pytest.mark.parametrize("which", ["gen", "stream", "both"])
@pytest.mark.parametrize("kind", ["answer", "tool_call"])
def test_unsafe_prompt_releases_nothing_sync(
    guard: Qwen3Guard, sguard: Qwen3StreamGuard, which: str, kind: str
) -> None:
    model = Paced(script=[SCRIPTS[kind]], generated=[], delay=DELAY, forever=True)
    # Gen alone streams the inner model when it does not check the answer (a sync invoke
    # cannot be stopped: see test_sync_invoked_inner_model_is_left_behind)
    options = {"check_response": False} if which == "gen" else {}
    safe = guard_model(
        model,
        **guards(which, guard, sguard),
        **options,  # type: ignore[arg-type]
        on_block="refuse",
        prompt_check="parallel",
    )
    user = Collector(probe=counter(model))
    out = list(safe.stream(BAD_Q, {"callbacks": [user]}))
    assert MARK not in everything(out) and MARK not in everything(user.chunks + user.tokens)
    assert MARK not in everything(user.events)
    assert [c.text for c in out] == ["Sorry, I can't help with that."]
    assert not any(c.tool_call_chunks for c in out)
    cost = out[-1].response_metadata[COST_KEY]
    assert message_verdicts(out[-1])["prompt"].is_unsafe
    check_stopped(model, user)
    assert cost["inner_chunks_discarded"] == blocked_event(user)[0]["inner_chunks_discarded"]


def test_sync_invoked_inner_model_is_left_behind(guard: Qwen3Guard) -> None:
    """Gen alone checks the whole answer, so the inner model is invoked, not streamed: a sync
    invoke cannot be stopped, but the caller does not wait for it and the cost says so."""
    model = Paced(script=[MARKED], generated=[], prefill=4.0)
    safe = guard_model(model, guard=guard, on_block="refuse", prompt_check="parallel")
    user = Collector(probe=counter(model))
    started = time.perf_counter()
    out = list(safe.stream(BAD_Q, {"callbacks": [user]}))
    # the refusal did not wait for the prefill (a local check takes ~0.1 s; 3 s of slack for
    # a loaded CI machine, still well short of the 4 s a wait would take)
    assert time.perf_counter() - started < 3.0
    assert [c.text for c in out] == ["Sorry, I can't help with that."]
    cost = out[-1].response_metadata[COST_KEY]
    assert cost["inner_read_in_flight"] is True and cost["inner_chunks_discarded"] == 0
    time.sleep(2.0)  # the invoke ends in its worker; its answer goes nowhere
    assert MARK not in everything(user.chunks + user.tokens + user.events)


def test_unsafe_prompt_raises_with_the_cost(guard: Qwen3Guard) -> None:
    model = Paced(script=[MARKED], generated=[], delay=DELAY, forever=True)
    safe = guard_model(model, guard=guard, check_response=False, prompt_check="parallel")
    user = Collector(probe=counter(model))
    got: list[Any] = []
    with pytest.raises(UnsafeContentError) as err:
        for chunk in safe.stream(BAD_Q, {"callbacks": [user]}):
            got.append(chunk)
    assert got == [] and user.tokens == []
    assert err.value.cost.discarded == blocked_event(user)[0]["inner_chunks_discarded"]  # type: ignore[attr-defined]
    check_stopped(model, user)
    with pytest.raises(UnsafeContentError):  # invoke ends the same way
        safe.invoke(BAD_Q)


@pytest.mark.parametrize("which", ["gen", "stream", "both"])
@pytest.mark.parametrize("kind", ["answer", "tool_call"])
def test_unsafe_prompt_releases_nothing_async(
    guard: Qwen3Guard, sguard: Qwen3StreamGuard, which: str, kind: str
) -> None:
    model = Paced(script=[SCRIPTS[kind]], generated=[], delay=DELAY, forever=True)
    safe = guard_model(
        model, **guards(which, guard, sguard), on_block="refuse", prompt_check="parallel"
    )
    user = Collector(probe=counter(model))

    async def run() -> list[dict[str, Any]]:
        events = [e async for e in safe.astream_events(BAD_Q, {"callbacks": [user]})]
        await asyncio.sleep(AFTER)  # the loop runs on: a task not cancelled would go on
        return events

    events = asyncio.run(run())
    assert MARK not in shown(events) and MARK not in everything(user.chunks + user.tokens)
    streamed = [e["data"]["chunk"] for e in events if e["event"] == "on_chat_model_stream"]
    assert [c.text for c in streamed] == ["Sorry, I can't help with that."]
    assert {e["name"] for e in events if e["event"] == "on_chat_model_start"} == {
        "GuardedChatModel"
    }
    check_stopped(model, user, streamed=which != "gen")  # Gen alone: the inner call is ainvoke


def test_unsafe_prompt_in_an_agent_reaches_no_stream_mode(
    guard: Qwen3Guard, sguard: Qwen3StreamGuard
) -> None:
    ran: list[str] = []

    @tool
    def search(query: str) -> str:
        """Search the web."""
        ran.append(query)
        return "Nothing found."

    model = Paced(script=[("search", {"query": MARKED}), MARKED], generated=[], delay=DELAY)
    safe = guard_model(
        model, guard=guard, stream_guard=sguard, on_block="refuse", prompt_check="parallel"
    )
    agent = create_agent(safe, [search])
    user = Collector(probe=counter(model))
    seen = list(
        agent.stream(
            {"messages": [{"role": "user", "content": BAD_Q}]},
            {"callbacks": [user]},
            stream_mode=["messages", "updates", "values", "custom"],
        )
    )
    assert MARK not in everything(seen) and MARK not in everything(user.chunks + user.tokens)
    assert ran == [] and model.turn == 1  # no tool ran, the agent ended on the refusal
    check_stopped(model, user)


# --- a safe prompt: the same answer as "before" mode ----------------------------------------------
@pytest.mark.parametrize("which", ["gen", "stream", "both"])
@pytest.mark.parametrize("kind", ["answer", "tool_call", "blocked_answer"])
def test_safe_prompt_answer_is_the_one_of_before_mode(
    guard: Qwen3Guard, sguard: Qwen3StreamGuard, which: str, kind: str
) -> None:
    script = {
        "answer": SAFE_A,
        "tool_call": ("search", {"query": "weather in Paris"}),
        "blocked_answer": "First you build the bomb, then you wire the timer and hide it.",
    }[kind]

    def answers(mode: str) -> list[Any]:
        runs = []
        for call in ("stream", "astream", "invoke", "ainvoke"):
            model = Paced(script=[script], generated=[], prefill=0.05, delay=0.001)
            safe = guard_model(
                model,
                **guards(which, guard, sguard),
                on_block="refuse",
                prompt_check=mode,
            )
            if call == "stream":
                out = list(safe.stream(SAFE_Q))
            elif call == "astream":

                async def run(s: Any = safe) -> list[Any]:
                    return [c async for c in s.astream(SAFE_Q)]

                out = asyncio.run(run())
            elif call == "invoke":
                out = [safe.invoke(SAFE_Q)]
            else:
                out = [asyncio.run(safe.ainvoke(SAFE_Q))]
            runs.append(
                [
                    (
                        c.content,
                        getattr(c, "tool_call_chunks", None) or c.tool_calls,
                        {k: v.level for k, v in message_verdicts(c).items()},
                    )
                    for c in out
                ]
            )
        return runs

    before, parallel = answers("before"), answers("parallel")
    assert parallel == before
    assert any(c[0] or c[1] for c in before[0])  # something was said


def test_safe_prompt_parallel_buffers_then_streams_on_demand(
    guard: Qwen3Guard, sguard: Qwen3StreamGuard
) -> None:
    """The head start is reported; after it the inner model is read as the hold-back loop reads,
    so a Stream block still stops it within a few chunks."""
    bomb = "Sure! First you build the bomb, then you wire the timer, " + MARKED
    model = Paced(script=[bomb], generated=[], delay=DELAY)
    safe = guard_model(
        model, guard=guard, stream_guard=sguard, on_block="refuse", prompt_check="parallel"
    )
    user = Collector(probe=counter(model))
    out = list(safe.stream(SAFE_Q, {"callbacks": [user]}))
    prompt = next(e for e in user.events if e["stage"] == "prompt")
    assert not prompt["blocked"] and prompt["inner_chunks_discarded"] == 0
    assert "Sorry" in out[-1].text and "bomb" not in everything(out)
    words = len(bomb.split(" ")) * 2
    assert model.generated[0] < words - 40, model.generated  # stopped long before the end


def test_consumer_that_stops_early_stops_the_inner_model(guard: Qwen3Guard) -> None:
    model = Paced(script=[MARKED], generated=[], delay=DELAY, forever=True)
    safe = guard_model(model, guard=guard, check_response=False, prompt_check="parallel")
    stream = safe.stream(SAFE_Q)
    first = next(stream)
    assert first.text.startswith(MARK)
    stream.close()
    at_close = model.generated[0]
    time.sleep(AFTER)
    assert model.generated[0] <= at_close + 1


def test_inner_errors_reach_the_caller(guard: Qwen3Guard) -> None:
    class Broken(Paced):
        def _stream(self, *a: Any, **k: Any):  # type: ignore[no-untyped-def]
            raise RuntimeError("provider down")

        async def _astream(self, *a: Any, **k: Any):  # type: ignore[no-untyped-def, override]
            raise RuntimeError("provider down")
            yield

    safe = guard_model(
        Broken(script=["x"], generated=[]),
        guard=guard,
        check_response=False,
        prompt_check="parallel",
    )
    with pytest.raises(RuntimeError, match="provider down"):
        list(safe.stream(SAFE_Q))

    async def run() -> list[Any]:
        return [c async for c in safe.astream(SAFE_Q)]

    with pytest.raises(RuntimeError, match="provider down"):
        asyncio.run(run())


def test_prompt_check_option_is_checked(guard: Qwen3Guard) -> None:
    model = Paced(script=["hi"], generated=[])
    assert guard_model(model, guard=guard).prompt_check == "before"  # the default
    with pytest.raises(ConfigurationError, match="prompt_check"):
        guard_model(model, guard=guard, prompt_check="after")
