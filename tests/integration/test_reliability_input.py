"""Bad input (issue 9, item 2): every malformed input gets a typed error (or, where it is
checkable, a correct verdict), before any model or server work; nothing crashes a session or the
micro-batcher's worker, a fail-open policy never turns bad input into an allowed verdict, and the
next request still works. Local Gen, remote Gen (TGI and OpenAI routes on loopback), Stream
sessions, the hold-back stage and the LangChain stage."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest

from qwen3guard_integrations import (
    InvalidInputError,
    Level,
    Policy,
    Qwen3Guard,
    Qwen3StreamGuard,
    SessionClosedError,
)
from qwen3guard_integrations.guards.holdback import HoldBack
from qwen3guard_integrations.testing import GenTestServer
from tests.support.guards import conversation

pytest.importorskip("torch")
pytest.importorskip("huggingface_hub")

MB = 1_000_000
HUGE = ("We walked along the river and talked about the weather. " * 20_000)[:MB]

ASSISTANT_ONLY = [{"role": "assistant", "content": "an assistant-only list"}]
BAD: list[Any] = [
    None,
    "",
    " \n\t ",
    [],
    (),
    b"how to make a bomb",
    bytearray(b"bytes"),
    memoryview(b"bytes"),
    7,
    3.5,
    True,
    object(),
    {"role": "user"},
    {"content": "no role"},
    {"role": "user", "content": None},
    {"role": "user", "content": b"bytes"},
    {"role": "user", "content": 12},
    {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "http://x/y.png"}}]},
    {"role": "user", "content": [{"type": "text", "text": None}]},
    {"role": "user", "content": [{"type": "text"}]},
    {"role": "user", "content": [b"bytes block"]},
    {"role": "user", "content": [["nested"]]},
    ASSISTANT_ONLY,
    [{"role": "system", "content": "a system-only list"}],
    [{"role": "robot", "content": "x"}],
    [{"role": 1, "content": "x"}],
    [["nested", "list"]],
    "bad \ud800 surrogate",
    "\udfff",
    [{"role": "user", "content": "also bad \udc80"}],
    {"role": "user", "content": [{"type": "text", "text": "bad \ud83d block"}]},
]


@pytest.fixture(scope="module")
def server(tiny) -> Iterator[GenTestServer]:  # type: ignore[no-untyped-def]
    with GenTestServer(tiny.gen) as srv:
        yield srv


@pytest.fixture(scope="module")
def local(tiny) -> Iterator[Qwen3Guard]:  # type: ignore[no-untyped-def]
    with Qwen3Guard.from_pretrained(
        tiny.gen, device="cpu", max_input_tokens=640, window_overlap=8
    ) as guard:
        yield guard


def test_bad_input_is_typed_for_local_gen_even_under_fail_open(local: Qwen3Guard) -> None:
    open_guard = Qwen3Guard(local.backend, policy=Policy(on_error="fail_open"))
    try:
        for guard in (local, open_guard):
            for bad in BAD:
                with pytest.raises(InvalidInputError):
                    guard.check_prompt(bad)
                with pytest.raises(InvalidInputError):
                    guard.check(bad)
                with pytest.raises(InvalidInputError):
                    asyncio.run(guard.acheck_prompt(bad))
                with pytest.raises(InvalidInputError):
                    guard.check_batch(["fine", bad])
                if bad == ASSISTANT_ONLY:
                    continue  # a fine *response*: its assistant turn is what gets checked
                with pytest.raises(InvalidInputError):
                    guard.check_response("a question", bad)
        for bad in (None, "q", [{"role": "user", "content": "q"}]):
            with pytest.raises(InvalidInputError):
                local.check_response(bad)
        for bad in (None, b"x", 3, "bomb", {"not": "items"}):
            with pytest.raises(InvalidInputError):
                local.check_batch(bad)  # type: ignore[arg-type]
        # the worker is alive and the next requests are right
        assert local.check_prompt("how to make a bomb").level is Level.UNSAFE
        assert asyncio.run(local.acheck_prompt("What a lovely day.")).level is Level.SAFE
    finally:
        open_guard.close()  # the backend is local.backend: a local backend has nothing to close


def test_non_text_blocks_can_be_skipped_and_the_text_still_checked(tiny) -> None:  # type: ignore[no-untyped-def]
    with Qwen3Guard.from_pretrained(tiny.gen, device="cpu") as guard:
        guard.non_text = "skip"
        image = {"type": "image_url", "image_url": {"url": "http://x/y.png"}}
        v = guard.check_prompt(
            {"role": "user", "content": [image, {"type": "text", "text": "how to make a bomb"}]}
        )
        assert v.level is Level.UNSAFE
        with pytest.raises(InvalidInputError):  # nothing left to check is not "Safe"
            guard.check_prompt({"role": "user", "content": [image]})


@pytest.mark.parametrize("protocol", ["tgi", "openai"])
def test_bad_input_never_reaches_the_server(server: GenTestServer, tiny, protocol: str) -> None:  # type: ignore[no-untyped-def]
    policy = Policy(on_error="fail_open")
    guard = (
        Qwen3Guard.from_tgi(server.url, tokenizer=tiny.gen, policy=policy)
        if protocol == "tgi"
        else Qwen3Guard.from_openai(
            server.openai_url, model=server.model_id, tokenizer=tiny.gen, policy=policy
        )
    )
    with guard:
        before = sum(server.requests.values())
        for bad in BAD:
            with pytest.raises(InvalidInputError):
                guard.check_prompt(bad)
            with pytest.raises(InvalidInputError):
                asyncio.run(guard.acheck_batch(["fine", bad]))
        assert sum(server.requests.values()) == before
        v = guard.check_prompt("how to make a bomb")
        assert v.level is Level.UNSAFE and not v.degraded


@pytest.mark.slow
def test_huge_inputs(local: Qwen3Guard, sguard: Qwen3StreamGuard) -> None:
    # 1 MB for the Gen encoder: windows, nothing cut (the model runs on it in benchmarks/)
    prompt = local.backend.encode(conversation(HUGE + " how to make a bomb?"))  # type: ignore[attr-defined]
    assert len(prompt.windows) > 500 and all(len(w) <= 640 for w in prompt.windows)
    # 100 kB checked end to end: the trigger at the very end is found
    assert local.check_prompt(HUGE[: MB // 10] + " how to make a bomb?").level is Level.UNSAFE
    # 1 MB for Stream: past the context, a typed error at once, for a prompt and for a response
    with pytest.raises(InvalidInputError, match="context"):
        sguard.session(HUGE)
    s = sguard.session("Tell me a story.")
    with pytest.raises(InvalidInputError, match="context"):
        s.feed(HUGE)
    assert s.closed  # what it was fed is not silently skipped: the session failed closed
    with pytest.raises(SessionClosedError):
        s.feed("more")
    with sguard.session("Tell me a story.") as s2:  # the next session works
        s2.feed("Sure, build the bomb now, then build the bomb again.")
        assert s2.finish().decision is Level.UNSAFE


def test_stream_sessions_reject_bad_pieces_and_stay_usable(sguard: Qwen3StreamGuard) -> None:
    for bad in BAD:
        with pytest.raises(InvalidInputError):
            sguard.session(bad)
    vocab = sguard.loaded.config.vocab_size
    with sguard.session("Tell me a story.") as s:
        hold = HoldBack(s)
        for piece in (None, b"x", bytearray(b"x"), 3.5, [vocab], [-1], [1.5], [True], {"a": 1}):
            with pytest.raises(InvalidInputError):
                s.feed(piece)  # type: ignore[arg-type]
            with pytest.raises(InvalidInputError):
                hold.push(piece)  # type: ignore[arg-type]
        for piece in ("\ud800", "ok \udfff"):
            with pytest.raises(InvalidInputError):
                hold.push(piece)
        assert not s.closed and s.response_ids == ()
        hold.push("Once upon a time, ")
        hold.push("a dragon slept.")
        assert not hold.finish().blocked
        assert hold.released_text == "Once upon a time, a dragon slept."


def test_langchain_stage_rejects_bad_chunks_and_closes(sguard: Qwen3StreamGuard) -> None:
    pytest.importorskip("langchain_core")
    from qwen3guard_integrations.langchain import StreamGuard

    stage = StreamGuard(sguard)
    closed: list[Any] = []
    real_open = stage._open

    def tracking_open(convo: Any = None) -> Any:
        session = real_open(convo)
        closed.append(session)
        return session

    stage._open = tracking_open  # type: ignore[method-assign]
    for bad in (123, b"bytes", None, ["a", 1]):
        with pytest.raises(InvalidInputError):
            list(stage.stream(bad))
    assert closed and all(s.closed for s in closed)
    assert stage.invoke("A calm, safe answer.") == "A calm, safe answer."
