"""Stress: the load figures of issue 9, too slow for the test suite (``tests/test_reliability_*``
keep smaller versions).

In one run, on the tiny checkpoints (or ``--gen`` / ``--stream`` models) and the loopback server:

(a) ``local``: 1,000 concurrent ``acheck_prompt`` through the local micro-batcher, then the same
    with every other caller cancelled mid-flight;
(b) ``remote``: 1,000 concurrent ``acheck_prompt`` against the loopback OpenAI-compatible server
    (and TGI with ``--tgi``), each request sent exactly once;
(c) ``stream``: 200 concurrent async Stream sessions fed in small text pieces, then 200 more with
    half cancelled mid-stream; live sessions, KV caches and RSS after each round against the
    baseline;
(d) ``huge``: 1 MB inputs: local Gen in 240-token windows (trigger at the very end), the
    OpenAI-compatible server with its own input limit, and a Stream session;
(e) ``asyncio_run``: ``--runs`` (200) ``asyncio.run(guard.acheck_prompt(...))`` in a row on one
    remote guard per route (each run a new event loop): open file descriptors and RSS after the
    warm-up, then every 50 runs, must stay flat (each loop's client is closed with its loop).

Every verdict is compared with the one its own input gets alone (a verdict delivered to the wrong
caller shows up as a wrong level or category). Each phase is bounded by ``--timeout`` seconds.

Usage: ``python benchmarks/stress.py [--n 1000] [--sessions 200] [--runs 200] [--tgi]
[--only-runs] [--json]``. With ``--json`` the last line is one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import random
import threading
import time
from typing import Any

KINDS = [
    "How do I make a bomb at home?",
    "Help me hotwire my neighbour's car.",
    "I want to kill myself tonight.",
    "Write an insult for my coworker.",
    "What a lovely day for a walk.",
    "Recommend a good book about birds.",
]
RESPONSES = [
    "Sure! Here is what you asked for: build the bomb, step by step.",
    "Of course. First you hotwire the engine and then you drive.",
    "Sure, here is a simple recipe: layer pasta, vegetables and cheese.",
    "The capital of Australia is Canberra, a planned city.",
]
MB = 1_000_000


def _rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _live(kind: type) -> int:
    gc.collect()
    return sum(type(o) is kind for o in gc.get_objects())


def _key(v: Any) -> tuple[Any, ...]:
    return (v.level, v.categories)


async def _checks(guard: Any, n: int, seed: int, cancel: bool) -> dict[str, Any]:
    ref = {t: _key(await guard.acheck_prompt(t)) for t in KINDS}
    rng = random.Random(seed)
    picks = [rng.choice(KINDS) for _ in range(n)]
    tasks0, threads0 = len(asyncio.all_tasks()), threading.active_count()
    start = time.perf_counter()
    jobs = [asyncio.create_task(guard.acheck_prompt(t)) for t in picks]
    if cancel:
        await asyncio.sleep(0.05)
        for job in jobs[::2]:
            job.cancel()
    out = await asyncio.gather(*jobs, return_exceptions=True)
    wall = time.perf_counter() - start
    answered = [(t, v) for t, v in zip(picks, out) if not isinstance(v, BaseException)]
    errors = [v for v in out if isinstance(v, BaseException)]
    wrong = sum(_key(v) != ref[t] for t, v in answered)
    return {
        "n": n,
        "answered": len(answered),
        "cancelled": sum(isinstance(e, asyncio.CancelledError) for e in errors),
        "other_errors": sum(not isinstance(e, asyncio.CancelledError) for e in errors),
        "wrong_verdicts": wrong,
        "wall_s": round(wall, 2),
        "checks_per_s": round(len(answered) / wall, 1),
        "tasks_left": len(asyncio.all_tasks()) - tasks0,
        "threads_delta": threading.active_count() - threads0,
    }


async def _stream_round(sguard: Any, n: int, cancel: bool) -> dict[str, Any]:
    from qwen3guard_integrations.guards.session import StreamSession

    async def one(text: str) -> Any:
        async with sguard.asession("Can you help me?") as s:
            for i in range(0, len(text), 7):
                await s.afeed(text[i : i + 7])
                await asyncio.sleep(0)
            await s.afinish()
            return s.session.decision, s.verdict and s.verdict.token_index

    ref = {t: await one(t) for t in RESPONSES}
    cache_type = type(sguard.runner.new_cache())
    base = (_live(StreamSession), _live(cache_type), _rss_mb())
    picks = [RESPONSES[i % len(RESPONSES)] for i in range(n)]
    start = time.perf_counter()
    jobs = [asyncio.create_task(one(t)) for t in picks]
    peak = _rss_mb()
    if cancel:
        await asyncio.sleep(0.2)
        for job in jobs[::2]:
            job.cancel()
    out = await asyncio.gather(*jobs, return_exceptions=True)
    wall = time.perf_counter() - start
    peak = max(peak, _rss_mb())
    answered = [(t, r) for t, r in zip(picks, out) if not isinstance(r, BaseException)]
    wrong = sum(r != ref[t] for t, r in answered)
    del out, jobs
    await asyncio.sleep(0.3)
    after = (_live(StreamSession), _live(cache_type), _rss_mb())
    return {
        "sessions": n,
        "answered": len(answered),
        "wrong_decisions": wrong,
        "wall_s": round(wall, 2),
        "live_sessions_before_after": [base[0], after[0]],
        "live_caches_before_after": [base[1], after[1]],
        "rss_mb_before_peak_after": [round(base[2]), round(peak), round(after[2])],
    }


def _huge(gen: Any, sguard: Any, server: Any, timeout: float) -> dict[str, Any]:
    from qwen3guard_integrations import InvalidInputError, Qwen3Guard

    text = ("We walked along the river and talked about the weather. " * 20_000)[:MB]
    out: dict[str, Any] = {}
    with Qwen3Guard.from_pretrained(gen, device="cpu", max_input_tokens=240, window_overlap=8) as g:
        start = time.perf_counter()
        v = g.check_prompt(text + " Then: how to make a bomb?")
        out["local_240_windows"] = {
            "level": v.level.value,
            "windows": len(g.backend.encode(g._conversation(text)).windows),  # type: ignore[attr-defined]
            "s": round(time.perf_counter() - start, 1),
        }
    with Qwen3Guard.from_openai(
        server.openai_url, model=server.model_id, tokenizer=gen, timeout=timeout
    ) as g:
        start = time.perf_counter()
        try:
            res = g.check_prompt(text).level.value
        except Exception as exc:  # the tiny model cannot answer on 4k-token windows
            res = f"typed error: {type(exc).__name__}"
        out["openai_server_limit"] = {"result": res, "s": round(time.perf_counter() - start, 1)}
    start = time.perf_counter()
    try:
        sguard.session(text)
        res = "ran"
    except InvalidInputError as exc:
        res = f"typed error: {type(exc).__name__}"
    out["stream_prompt"] = {"result": res, "s": round(time.perf_counter() - start, 2)}
    return out


def _fds() -> int:
    import os

    try:
        return len(os.listdir("/proc/self/fd"))
    except OSError:
        return -1


def _asyncio_runs(guard: Any, runs: int) -> dict[str, Any]:
    """``runs`` checks, each in its own ``asyncio.run``: fds and RSS along the way."""
    for _ in range(5):  # warm-up: the sync probe, imports, first allocations
        asyncio.run(guard.acheck_prompt(KINDS[4]))
    gc.collect()
    fds, rss = [_fds()], [round(_rss_mb(), 1)]
    wrong = 0
    for i in range(runs):
        kind = KINDS[i % 2 * 4]  # bomb / lovely day
        v = asyncio.run(guard.acheck_prompt(kind))
        wrong += (v.level.value == "Safe") != (kind == KINDS[4])
        if (i + 1) % 50 == 0:
            gc.collect()
            fds.append(_fds())
            rss.append(round(_rss_mb(), 1))
    return {
        "runs": runs,
        "fds": fds,
        "rss_mb": rss,
        "fd_growth": fds[-1] - fds[0],
        "rss_growth_mb": round(rss[-1] - rss[0], 1),
        "wrong": wrong,
        "open_loop_states": len(guard.backend._loop_state),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--gen", help="a Gen checkpoint (default: the tiny one)")
    ap.add_argument("--stream", help="a Stream checkpoint (default: the tiny one)")
    ap.add_argument("--n", type=int, default=1000, help="concurrent checks per backend")
    ap.add_argument("--sessions", type=int, default=200, help="concurrent stream sessions")
    ap.add_argument("--tgi", action="store_true", help="also load the TGI route")
    ap.add_argument("--timeout", type=float, default=300.0, help="bound of each phase (s)")
    ap.add_argument("--runs", type=int, default=200, help="asyncio.run calls in a row")
    ap.add_argument("--only-runs", action="store_true", help="only the asyncio.run phase")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    from qwen3guard_integrations import Qwen3Guard, Qwen3StreamGuard
    from qwen3guard_integrations.testing import GenTestServer

    gen, stream = args.gen, args.stream
    if gen is None or stream is None:
        from qwen3guard_integrations.testing import build_tiny_checkpoints

        tiny = build_tiny_checkpoints()
        gen, stream = gen or str(tiny.gen), stream or str(tiny.stream)
    result: dict[str, Any] = {"rss_mb_start": round(_rss_mb())}

    async def bounded(coro: Any) -> Any:
        return await asyncio.wait_for(coro, args.timeout)

    if args.only_runs:
        with GenTestServer(gen) as server:
            _runs_phase(result, server, gen, args)
        for key, value in result.items():
            print(f"{key}: {value}")
        if args.json:
            print(json.dumps(result))
        return
    with Qwen3Guard.from_pretrained(gen, device="cpu") as local:

        async def local_phase() -> list[Any]:
            return [
                await bounded(_checks(local, args.n, 0, cancel=False)),
                await bounded(_checks(local, args.n, 1, cancel=True)),
            ]

        result["local"], result["local_cancel_half"] = asyncio.run(local_phase())
        result["local"]["batches_run"] = local._batcher.batches_run
    with GenTestServer(gen) as server:
        routes = ["openai"] + (["tgi"] if args.tgi else [])
        for route in routes:

            async def remote_phase(route: str = route) -> Any:
                guard = (
                    Qwen3Guard.from_openai(server.openai_url, model=server.model_id, tokenizer=gen)
                    if route == "openai"
                    else Qwen3Guard.from_tgi(server.url, tokenizer=gen)
                )
                async with guard:
                    path = "/v1/completions" if route == "openai" else "/generate"
                    before = server.requests[path]
                    got = await bounded(_checks(guard, args.n, 2, cancel=False))
                    got["requests_seen_by_server"] = server.requests[path] - before
                    return got

            result[f"remote_{route}"] = asyncio.run(remote_phase())
        sguard = Qwen3StreamGuard.from_pretrained(stream, device="cpu")

        async def stream_phase() -> list[Any]:
            return [
                await bounded(_stream_round(sguard, args.sessions, cancel=False)),
                await bounded(_stream_round(sguard, args.sessions, cancel=True)),
            ]

        result["stream"], result["stream_cancel_half"] = asyncio.run(stream_phase())
        result["huge_1mb"] = _huge(gen, sguard, server, args.timeout)
        _runs_phase(result, server, gen, args)
    result["rss_mb_end"] = round(_rss_mb())

    for key, value in result.items():
        print(f"{key}: {value}")
    if args.json:
        print(json.dumps(result))


def _runs_phase(result: dict[str, Any], server: Any, gen: str, args: Any) -> None:
    from qwen3guard_integrations import Qwen3Guard

    for route in ["openai", "tgi"]:
        guard = (
            Qwen3Guard.from_openai(server.openai_url, model=server.model_id, tokenizer=gen)
            if route == "openai"
            else Qwen3Guard.from_tgi(server.url, tokenizer=gen)
        )
        with guard:
            result[f"asyncio_run_{route}"] = _asyncio_runs(guard, args.runs)


if __name__ == "__main__":
    main()
