"""The `StreamEngine`'s limits on the tiny Stream checkpoint: full (sessions, tokens), evicted and
failed sessions, each with its typed error, and no cache left behind."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import pytest

from qwen3guard_integrations import (
    ConfigurationError,
    InvalidInputError,
    Qwen3StreamGuard,
    SessionClosedError,
)
from qwen3guard_integrations.backends.stream.engine import StreamEngine
from qwen3guard_integrations.core.errors import EngineFullError, SessionEvictedError

torch = pytest.importorskip("torch")


@pytest.fixture(scope="module")
def guard(tiny) -> Qwen3StreamGuard:  # type: ignore[no-untyped-def]
    return Qwen3StreamGuard.from_pretrained(tiny.stream, device="cpu", engine=False)


def _ids(guard: Qwen3StreamGuard, text: str) -> list[int]:
    return list(guard.tokenizer(text, add_special_tokens=False)["input_ids"])


def _empty(engine: StreamEngine) -> None:
    stats = engine.stats()
    assert stats["live_sessions"] == 0 and stats["cached_tokens"] == 0 and stats["queued_jobs"] == 0
    assert engine._tokens == 0 and engine.pool.live == 0  # nothing reserved, every slot free


def test_full_engine_raises_or_waits(guard: Qwen3StreamGuard) -> None:
    engine = StreamEngine(guard.runner, max_sessions=2)
    a, b = engine.open(), engine.open()
    with pytest.raises(EngineFullError, match="2 live sessions"):
        engine.open()
    engine.close_session(a)
    c = engine.open()  # the freed place is usable again
    waiting = StreamEngine(guard.runner, max_sessions=1, on_full="wait", full_timeout_s=0.2)
    d = waiting.open()
    started = time.monotonic()
    with pytest.raises(EngineFullError):
        waiting.open()
    assert time.monotonic() - started >= 0.2
    threading.Timer(0.1, waiting.close_session, args=(d,)).start()
    waiting.full_timeout_s = 5.0
    e = waiting.open()  # waited for the other session to close
    for engine_, handles in ((engine, (b, c)), (waiting, (e,))):
        for h in handles:
            engine_.close_session(h)
        _empty(engine_)


def test_token_budget_is_a_typed_error_and_the_session_closes(tiny) -> None:  # type: ignore[no-untyped-def]
    g = Qwen3StreamGuard.from_pretrained(
        tiny.stream, device="cpu", engine_options={"max_cached_tokens": 120}
    )
    s = g.session("Can you help me?")
    used = s.cached_tokens
    with pytest.raises(EngineFullError, match="cached tokens"):
        s.feed(_ids(g, "word " * 200))
    assert s.closed and s.cache is None  # fail closed: those ids are not moderated
    with pytest.raises(SessionClosedError):
        s.feed([1])
    assert used > 0 and g.engine is not None
    _empty(g.engine)
    with pytest.raises(ConfigurationError):
        Qwen3StreamGuard.from_pretrained(tiny.stream, device="cpu", engine_options={"on_full": 1})


def test_idle_session_is_evicted_with_a_typed_error(tiny) -> None:  # type: ignore[no-untyped-def]
    g = Qwen3StreamGuard.from_pretrained(
        tiny.stream, device="cpu", engine_options={"idle_timeout_s": 0.3}
    )
    idle, busy = g.session("Hello there."), g.session("Hi!")
    ids = _ids(g, "The capital of Australia is Canberra.")
    for t in ids[:3]:
        busy.feed([t])
        time.sleep(0.15)
    for t in ids[3:6]:
        busy.feed([t])
    time.sleep(0.35)
    with pytest.raises(SessionEvictedError, match="evicted"):
        idle.feed(ids[:1])  # never a silent restart
    assert isinstance(SessionEvictedError("x"), SessionClosedError)
    with pytest.raises(SessionEvictedError):
        busy.feed(ids[6:7])  # this one went idle too by now
    assert g.stats()["sessions_evicted"] == 2
    assert g.engine is not None
    _empty(g.engine)
    fresh = g.session("Hello again.")  # a new session works
    assert fresh.feed(ids[:2]).tokens
    fresh.close()
    _empty(g.engine)


def test_a_failing_session_closes_and_the_others_go_on(guard: Qwen3StreamGuard) -> None:
    engine = StreamEngine(guard.runner, gather_us=20_000)  # steps wait for all three rows
    prompt = _ids(guard, "<|im_start|>user\nTell me a story.<|im_end|>\n")
    resp = _ids(guard, "Once upon a time there was a dragon.")
    want_cache = guard.runner.new_cache()
    guard.runner.forward(prompt, want_cache)
    want = [guard.runner.forward([t], want_cache, query=False)[0] for t in resp]
    handles = [engine.open() for _ in range(3)]
    for h in handles:
        engine.run(h, prompt)
    got: dict[int, list[Any]] = {k: [] for k in range(3)}
    errors: dict[int, BaseException] = {}

    def one(k: int) -> None:
        for j, t in enumerate(resp):
            token = guard.runner.vocab_size + 7 if (k == 1 and j == 3) else t  # not a real id
            try:
                got[k].append(engine.run(handles[k], [token])[0])
            except Exception as exc:
                errors[k] = exc
                return

    threads = [threading.Thread(target=one, args=(k,)) for k in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert set(errors) == {1} and isinstance(errors[1], IndexError) and len(got[1]) == 3
    for k in (0, 2):
        assert all(torch.allclose(g, w, atol=1e-4) for g, w in zip(got[k], want))
        assert len(got[k]) == len(resp)
    with pytest.raises(SessionClosedError, match="failed"):
        engine.run(handles[1], resp[:1])
    stats = engine.stats()
    assert stats["sessions_failed"] == 1 and stats["live_sessions"] == 2
    assert stats["cached_tokens"] == 2 * (len(prompt) + len(resp))
    for k in (0, 2):
        engine.close_session(handles[k])
    _empty(engine)


async def test_cancelled_feed_closes_its_session_and_frees_its_slot(tiny) -> None:  # type: ignore[no-untyped-def]
    g = Qwen3StreamGuard.from_pretrained(tiny.stream, device="cpu")
    ids = _ids(g, "The capital of Australia is Canberra. " * 30)
    async with g.asession("Hello.") as other:
        s = g.asession("Hi.")
        await s.start()
        task = asyncio.create_task(s.afeed(ids))  # a long chunk: still running when cancelled
        await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert s.session.closed
        with pytest.raises(SessionClosedError):
            await s.afeed([1])
        assert (await other.afeed(ids[:3])).tokens  # the other session goes on
    await asyncio.sleep(0.2)  # the step that held the cancelled job finishes
    assert g.engine is not None
    _empty(g.engine)


def test_bad_engine_options_and_bad_runs_are_typed_errors(guard: Qwen3StreamGuard) -> None:
    for bad in ({"max_sessions": 0}, {"prefill_chunk": "8"}, {"idle_timeout_s": -1}):
        with pytest.raises(ConfigurationError):
            StreamEngine(guard.runner, **bad)  # type: ignore[arg-type]
    engine = StreamEngine(guard.runner)
    h = engine.open()
    with pytest.raises(InvalidInputError):
        engine.run(h, [])
    engine.close_session(h)
    with pytest.raises(SessionClosedError):
        engine.run(h, [1])
    engine.close()
    with pytest.raises(SessionEvictedError):
        engine.open()
    _empty(engine)


def test_a_step_failing_mid_stream_closes_the_session(tiny, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from qwen3guard_integrations.guards.holdback import HoldBack

    g = Qwen3StreamGuard.from_pretrained(tiny.stream, device="cpu")
    assert g.engine is not None
    real, calls = g.engine._forward, {"n": 0}

    def forward(batch: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == 4:
            raise RuntimeError("CUDA out of memory")
        return real(batch)

    monkeypatch.setattr(g.engine, "_forward", forward)
    s, other = g.session("Tell me a story."), g.session("Hello.")
    hold = HoldBack(s)
    with pytest.raises(RuntimeError, match="out of memory"):
        for piece in ["Once ", "upon ", "a ", "time ", "there ", "was ", "a ", "dragon."]:
            hold.push(piece)
    assert s.closed and s.cache is None
    with pytest.raises(SessionClosedError):
        hold.push("more")
    assert other.feed(_ids(g, "Hi there")).tokens  # the engine goes on
    other.close()
    _empty(g.engine)
