"""The batched `StreamEngine` on the tiny Stream checkpoint: every session's logits equal those of
the same session run alone, whatever runs beside it (mixed lengths, chunked prefill, sessions
joining and leaving mid-run; threads and asyncio)."""

from __future__ import annotations

import asyncio
import random
import threading
import time
from typing import Any

import pytest

from qwen3guard_integrations import Qwen3StreamGuard
from qwen3guard_integrations.backends.stream.engine import StreamEngine

torch = pytest.importorskip("torch")

ATOL = 1e-4
WORDS = (
    "the capital of Australia is Canberra plants use sunlight to turn water and air into sugar "
    "start with a few chords and practise for fifteen minutes a day build the bomb step by step"
).split()


@pytest.fixture(scope="module")
def guard(tiny) -> Qwen3StreamGuard:  # type: ignore[no-untyped-def]
    return Qwen3StreamGuard.from_pretrained(tiny.stream, device="cpu", engine=False)


def _cases(guard: Qwen3StreamGuard, n: int, seed: int) -> list[tuple[list[int], list[int]]]:
    """``n`` (prompt ids, response ids) pairs of different lengths; one prompt is long enough
    to be prefilled in several chunks."""
    rng = random.Random(seed)
    tok = guard.tokenizer
    out = []
    for k in range(n):
        words = 400 if k == 1 else rng.randint(3, 40)
        prompt = " ".join(rng.choice(WORDS) for _ in range(words))
        with guard.session(prompt) as s:
            prompt_ids = list(s.prompt_ids)
        text = " ".join(rng.choice(WORDS) for _ in range(rng.randint(5, 30)))
        out.append((prompt_ids, tok(text, add_special_tokens=False)["input_ids"]))
    return out


def _plan(response: list[int], rng: random.Random) -> list[list[int]]:
    """The response in feeds: mostly one token, sometimes a chunk of 2-3."""
    feeds, i = [], 0
    while i < len(response):
        n = 1 if rng.random() < 0.75 else rng.randint(2, 3)
        feeds.append(response[i : i + n])
        i += n
    return feeds


def _reference(guard: Qwen3StreamGuard, prompt: list[int], feeds: list[list[int]]) -> list[Any]:
    """The lone session: the prompt in one forward, then each feed, on its own cache."""
    cache = guard.runner.new_cache()
    out = [guard.runner.forward(prompt, cache)]
    out += [guard.runner.forward(f, cache, query=False) for f in feeds]
    return out


def _assert_equal(got: list[Any], want: list[Any]) -> None:
    assert len(got) == len(want)
    for k, (g, w) in enumerate(zip(got, want)):
        heads = 4 if k == 0 else 2  # the prompt reads the query head too
        for j in range(heads):
            assert g[j].shape == w[j].shape, (k, j)
            assert torch.allclose(g[j], w[j], atol=ATOL, rtol=0), (k, j, (g[j] - w[j]).abs().max())


def _engine(guard: Qwen3StreamGuard, **kw: Any) -> StreamEngine:
    kw.setdefault("prefill_chunk", 64)
    return StreamEngine(guard.runner, **kw)


def test_threads_joining_and_leaving_equal_lone_sessions(guard: Qwen3StreamGuard) -> None:
    cases = _cases(guard, 6, seed=1)
    rng = random.Random(2)
    plans = [_plan(r, rng) for _, r in cases]
    want = [_reference(guard, p, f) for (p, _), f in zip(cases, plans)]
    engine = _engine(guard)
    got: list[list[Any]] = [[] for _ in cases]
    errors: list[BaseException] = []

    def one(k: int) -> None:
        try:
            time.sleep(0.01 * k)  # sessions join while others are mid-run
            h = engine.open()
            prompt, _ = cases[k]
            got[k].append(engine.run(h, prompt, query=True))
            for f in plans[k]:
                got[k].append(engine.run(h, f))
            engine.close_session(h)  # and leave while others go on
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=one, args=(k,)) for k in range(len(cases))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    for g, w in zip(got, want):
        _assert_equal(g, w)
    stats = engine.stats()
    assert stats["live_sessions"] == 0 and stats["cached_tokens"] == 0
    assert stats["batch_size_max"] > 1  # steps really were shared
    assert stats["prefill_chunks"] >= 5  # the long prompt went in chunks of 64


async def test_asyncio_joining_and_leaving_equal_lone_sessions(guard: Qwen3StreamGuard) -> None:
    cases = _cases(guard, 6, seed=3)
    rng = random.Random(4)
    plans = [_plan(r, rng) for _, r in cases]
    want = [_reference(guard, p, f) for (p, _), f in zip(cases, plans)]
    engine = _engine(guard)

    async def one(k: int) -> list[Any]:
        await asyncio.sleep(0.005 * k)
        h = engine.open()
        try:
            out = [await engine.arun(h, cases[k][0], query=True)]
            for f in plans[k]:
                out.append(await engine.arun(h, f))
            return out
        finally:
            engine.close_session(h)

    got = await asyncio.gather(*(one(k) for k in range(len(cases))))
    for g, w in zip(got, want):
        _assert_equal(g, w)
    stats = engine.stats()
    assert stats["batch_size_max"] > 1 and stats["mixed_steps"] >= 1
    assert stats["live_sessions"] == 0 and stats["cached_tokens"] == 0


def test_sessions_through_the_engine_equal_sessions_without(tiny) -> None:  # type: ignore[no-untyped-def]
    plain = Qwen3StreamGuard.from_pretrained(tiny.stream, device="cpu", engine=False)
    shared = Qwen3StreamGuard.from_pretrained(tiny.stream, device="cpu")
    assert shared.engine is not None and plain.engine is None
    texts = ["Sure, here is how to build the bomb.", "The capital of Australia is Canberra."] * 2

    def run(g: Qwen3StreamGuard, text: str) -> tuple[Any, ...]:
        with g.session("Can you help me?") as s:
            ups = [s.feed(text[i : i + 4]) for i in range(0, len(text), 4)] + [s.finish()]
            scores = [t.scores for u in ups for t in u.tokens]
            return s.prompt_verdict.scores, scores, s.decision, s.verdict and s.verdict.token_index

    want = [run(plain, t) for t in texts]
    out: list[Any] = [None] * len(texts)
    threads = [
        threading.Thread(target=lambda k=k: out.__setitem__(k, run(shared, texts[k])))
        for k in range(len(texts))
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for (p1, s1, d1, i1), (p2, s2, d2, i2) in zip(out, want):
        assert (d1, i1) == (d2, i2)
        for a, b in zip([p1, *s1], [p2, *s2]):
            assert all(abs(a[lv] - b[lv]) < ATOL for lv in b)
    assert shared.stats()["live_sessions"] == 0 and shared.stats()["cached_tokens"] == 0


def test_a_lone_session_steps_in_its_own_thread_with_the_lone_logits(
    guard: Qwen3StreamGuard,
) -> None:
    # issue 16 item 2: alone, a one-token feed is the lean step on the session's slot, run by
    # the caller (no worker thread, no queue), and its logits are those of the lone session
    engine = StreamEngine(guard.runner, max_sessions=4)
    ((prompt, response),) = _cases(guard, 1, seed=7)
    feeds = [[t] for t in response]
    want = _reference(guard, prompt, feeds)
    handle = engine.open()
    try:
        engine.run(handle, prompt, query=True)
        steps = engine.stats()["steps"]
        got = [engine.run(handle, f) for f in feeds]
        assert engine._worker is None  # nobody handed anything to a worker
        assert engine.stats()["steps"] == steps + len(feeds)
        assert engine.stats()["cached_tokens"] == len(prompt) + len(feeds)
        for g, w in zip(got, want[1:]):
            for a, b in zip(g[:2], w[:2]):
                assert torch.allclose(a, b, atol=ATOL)
    finally:
        engine.close_session(handle)
        engine.close()
    assert engine.stats()["cached_tokens"] == 0
