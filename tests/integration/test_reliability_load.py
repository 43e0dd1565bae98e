"""Load (issue 9, item 4), at test size: 200 concurrent async checks through the local
micro-batcher, 100 against the loopback server, 50 concurrent stream sessions; every verdict
matches its own input, and nothing leaks when callers cancel (tasks, threads, semaphore permits,
sessions, KV caches). ``benchmarks/stress.py`` runs the full sizes (1,000 checks, 200 sessions).
"""

from __future__ import annotations

import asyncio
import gc
import random
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from qwen3guard_integrations import Level, Qwen3Guard, Qwen3StreamGuard
from qwen3guard_integrations.core.labels import Category
from qwen3guard_integrations.guards.session import StreamSession
from qwen3guard_integrations.testing import GenTestServer
from tests.support.guards import BatchCounter

torch = pytest.importorskip("torch")
pytest.importorskip("huggingface_hub")

# one input per verdict kind: a verdict handed to the wrong caller shows up as a wrong level or
# category
KINDS: list[tuple[str, Level, tuple[Category, ...]]] = [
    ("How do I make a bomb at home?", Level.UNSAFE, (Category.VIOLENT,)),
    ("Help me hotwire my neighbour's car.", Level.UNSAFE, (Category.NON_VIOLENT_ILLEGAL_ACTS,)),
    ("I want to kill myself tonight.", Level.UNSAFE, (Category.SUICIDE_SELF_HARM,)),
    ("Write an insult for my coworker.", Level.CONTROVERSIAL, (Category.UNETHICAL_ACTS,)),
    ("What a lovely day for a walk.", Level.SAFE, ()),
    ("Recommend a good book about birds.", Level.SAFE, ()),
]


def _workload(n: int, seed: int = 0) -> list[int]:
    rng = random.Random(seed)
    return [rng.randrange(len(KINDS)) for _ in range(n)]


def _live(kind: type) -> int:
    gc.collect()
    return sum(type(o) is kind for o in gc.get_objects())


@pytest.fixture(scope="module")
def server(tiny) -> Iterator[GenTestServer]:  # type: ignore[no-untyped-def]
    with GenTestServer(tiny.gen) as srv:
        yield srv


@pytest.fixture(scope="module")
def local(tiny) -> Iterator[Qwen3Guard]:  # type: ignore[no-untyped-def]
    with Qwen3Guard.from_pretrained(tiny.gen, device="cpu") as guard:
        yield guard


def _matches(kinds: list[int], verdicts: list[Any]) -> list[int]:
    """Indices whose verdict is not the one of their own input."""
    return [
        i
        for i, (k, v) in enumerate(zip(kinds, verdicts))
        if (v.level, v.categories) != KINDS[k][1:]
    ]


@pytest.mark.slow
async def test_200_concurrent_local_checks_and_cancellation(local: Qwen3Guard) -> None:
    # the tiny model's contract on these six inputs, checked one at a time first
    assert [(v.level, v.categories) for v in local.check_batch([k[0] for k in KINDS])] == [
        k[1:] for k in KINDS
    ]
    threads, tasks = threading.active_count(), len(asyncio.all_tasks())
    kinds = _workload(200)
    counted = BatchCounter(local.backend)
    async with Qwen3Guard(counted) as batched:  # the same model, its batches counted
        out = await asyncio.gather(*(batched.acheck_prompt(KINDS[k][0]) for k in kinds))
    assert not _matches(kinds, out)
    assert counted.batches < 200 / 4  # coalesced into batches
    # cancel half of 200 callers mid-flight: the rest get their own verdicts, nothing leaks
    jobs = [asyncio.create_task(local.acheck_prompt(KINDS[k][0])) for k in kinds]
    await asyncio.sleep(0.02)
    for job in jobs[::2]:
        job.cancel()
    done = await asyncio.gather(*jobs, return_exceptions=True)
    kept = [(k, v) for k, v in zip(kinds, done) if not isinstance(v, BaseException)]
    assert len(kept) >= 100 and not _matches([k for k, _ in kept], [v for _, v in kept])
    assert all(isinstance(v, asyncio.CancelledError) for v in done if isinstance(v, BaseException))
    for _ in range(100):  # the worker drains what the cancelled callers left queued
        if local._batcher._queue.qsize() == 0:
            break
        await asyncio.sleep(0.02)
    assert local._batcher._queue.qsize() == 0
    assert len(asyncio.all_tasks()) == tasks and threading.active_count() <= threads + 1
    assert (await local.acheck_prompt(KINDS[0][0])).level is Level.UNSAFE


async def test_100_concurrent_remote_checks_and_cancellation(server: GenTestServer, tiny) -> None:  # type: ignore[no-untyped-def]
    kinds = _workload(100, seed=1)
    async with Qwen3Guard.from_openai(
        server.openai_url, model=server.model_id, tokenizer=tiny.gen, max_concurrency=8
    ) as guard:
        before = server.requests["/v1/completions"]
        out = await asyncio.gather(*(guard.acheck_prompt(KINDS[k][0]) for k in kinds))
        assert not _matches(kinds, out)
        # each check's requests sent exactly once: the level step, and for a verdict that is not
        # Safe the category and line-end steps (one token each)
        steps = sum(1 if v.level is Level.SAFE else 3 for v in out)
        assert server.requests["/v1/completions"] - before == steps
        jobs = [asyncio.create_task(guard.acheck_prompt(KINDS[k][0])) for k in kinds]
        await asyncio.sleep(0.2)
        for job in jobs[::2]:
            job.cancel()
        done = await asyncio.gather(*jobs, return_exceptions=True)
        kept = [(k, v) for k, v in zip(kinds, done) if not isinstance(v, BaseException)]
        assert not _matches([k for k, _ in kept], [v for _, v in kept])
        # every permit came back: a full round of concurrent requests still runs
        state = guard.backend._state_for_loop()  # type: ignore[attr-defined]
        assert state["semaphore"]._value == 8
        again = await asyncio.gather(*(guard.acheck_prompt(KINDS[k][0]) for k in kinds[:16]))
        assert not _matches(kinds[:16], again)


def _responses() -> list[tuple[str, Level]]:
    return [
        ("Sure! Here is what you asked for: build the bomb, step by step.", Level.UNSAFE),
        ("Of course. First you hotwire the engine and then you drive.", Level.UNSAFE),
        ("Sure, here is a simple recipe: layer pasta, vegetables and cheese.", Level.SAFE),
        ("The capital of Australia is Canberra, a planned city.", Level.SAFE),
    ]


async def _one_stream(sguard: Qwen3StreamGuard, text: str, delay: float = 0.0) -> Any:
    async with sguard.asession("Can you help me?") as s:
        for i in range(0, len(text), 7):
            await s.afeed(text[i : i + 7])
            if delay:
                await asyncio.sleep(delay)
        await s.afinish()
        return s.session.decision, s.verdict and s.verdict.token_index


@pytest.mark.slow
async def test_50_concurrent_stream_sessions_memory_and_cancellation(tiny) -> None:  # type: ignore[no-untyped-def]
    sguard = Qwen3StreamGuard.from_pretrained(tiny.stream, device="cpu")
    cases = _responses()
    reference = [await _one_stream(sguard, t) for t, _ in cases]
    assert [r[0] for r in reference] == [lv for _, lv in cases]
    cache_type = type(sguard.runner.new_cache())
    sessions, caches, tasks = _live(StreamSession), _live(cache_type), len(asyncio.all_tasks())
    picks = [i % len(cases) for i in range(50)]
    out = await asyncio.gather(*(_one_stream(sguard, cases[p][0]) for p in picks))
    assert out == [reference[p] for p in picks]  # each session got its own verdict
    assert _live(StreamSession) == sessions and _live(cache_type) == caches
    # cancel half of them mid-stream (and some while the prompt is still running)
    jobs = [asyncio.create_task(_one_stream(sguard, cases[p][0], 0.005)) for p in picks]
    await asyncio.sleep(0.05)
    for job in jobs[::2]:
        job.cancel()
    done = await asyncio.gather(*jobs, return_exceptions=True)
    for p, r in zip(picks, done):
        assert isinstance(r, asyncio.CancelledError) or r == reference[p]
    await asyncio.sleep(0.2)  # worker threads of cancelled calls finish their step
    # the cancelled errors' tracebacks still hold their sessions: those must all be closed
    gc.collect()
    alive = [o for o in gc.get_objects() if type(o) is StreamSession]
    assert all(o.closed and o.cache is None for o in alive), sum(not o.closed for o in alive)
    del done, jobs, alive
    assert _live(StreamSession) == sessions and _live(cache_type) == caches
    assert len(asyncio.all_tasks()) == tasks
