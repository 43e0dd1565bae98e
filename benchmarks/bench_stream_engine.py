"""Many concurrent Stream sessions: the batched `StreamEngine` vs per-session stepping.

For N = 1, 8, 32, 64 concurrent sessions (threads, then asyncio), each session runs a prompt
and then feeds a ``--tokens``-token answer one token at a time. The same workload runs through
a guard with the engine (one batched forward per step for all live sessions) and through a
guard without it (each session its own one-token forward), side by side in one run. Reported:
aggregate moderated tokens/s and p50/p99 per-token latency (the time one ``feed`` takes).

``batched_vs_per_session_at_32`` in the JSON is the engine's aggregate throughput over the
per-session stepping at N = 32 (threads); ``single_session_latency_ratio`` the engine's p50 per-
token latency over the lean per-session step at N = 1.

Usage: ``python benchmarks/bench_stream_engine.py [--model PATH] [--tokens 256]
[--sizes 1,8,32,64] [--modes threads,asyncio] [--json]``. Without ``--model`` it builds (or
reuses) the tiny test checkpoint. With ``--json`` the last line is one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import threading
import time
from typing import Any

PROMPT = "Can you tell me a few facts about Australia, plants and guitars?"


def _answer_ids(tok: Any, n: int) -> list[int]:
    text = (
        "The capital of Australia is Canberra. Plants use sunlight to turn water and air into "
        "sugar. Start with a few chords and practise for fifteen minutes a day. "
    )
    ids: list[int] = []
    while len(ids) < n:
        ids += tok(text, add_special_tokens=False)["input_ids"]
    return ids[:n]


def _pct(xs: list[float], q: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, int(q * len(s)))]


def _threads(guard: Any, n: int, ids: list[int]) -> tuple[float, list[float]]:
    lat: list[list[float]] = [[] for _ in range(n)]
    gate = threading.Barrier(n + 1)

    def one(k: int) -> None:
        with guard.session(PROMPT) as s:
            gate.wait()
            for t in ids:
                a = time.perf_counter()
                s.feed([t])
                lat[k].append(time.perf_counter() - a)

    threads = [threading.Thread(target=one, args=(k,)) for k in range(n)]
    for t in threads:
        t.start()
    gate.wait()  # every prompt is in: time the answers only
    start = time.perf_counter()
    for t in threads:
        t.join()
    return time.perf_counter() - start, [x for row in lat for x in row]


def _asyncio(guard: Any, n: int, ids: list[int]) -> tuple[float, list[float]]:
    async def main() -> tuple[float, list[float]]:
        sessions = [guard.asession(PROMPT) for _ in range(n)]
        await asyncio.gather(*(s.start() for s in sessions))
        lat: list[float] = []

        async def one(s: Any) -> None:
            for t in ids:
                a = time.perf_counter()
                await s.afeed([t])
                lat.append(time.perf_counter() - a)
            await s.aclose()

        start = time.perf_counter()
        await asyncio.gather(*(one(s) for s in sessions))
        return time.perf_counter() - start, lat

    return asyncio.run(main())


def run(
    model: str | None, tokens: int, sizes: list[int], modes: list[str], threads: int
) -> dict[str, Any]:
    """Measure and return the figures (see module docstring)."""
    torch = __import__("torch")
    if threads:
        torch.set_num_threads(threads)
    from qwen3guard_integrations import Qwen3StreamGuard

    if model is None:
        from qwen3guard_integrations.testing import build_tiny_checkpoints

        model = str(build_tiny_checkpoints().stream)
    top = max(sizes)
    engine = Qwen3StreamGuard.from_pretrained(model, engine_options={"max_sessions": top})
    single = Qwen3StreamGuard.from_pretrained(model, engine=False)
    if engine.engine is None:
        raise SystemExit("this checkpoint's layout is not covered by the engine")
    ids = _answer_ids(engine.tokenizer, tokens)
    for g in (engine, single):  # warm-up
        _threads(g, 2, ids[:16])
    rows: list[dict[str, Any]] = []
    runners = {"threads": _threads, "asyncio": _asyncio}
    for mode in modes:
        for n in sizes:
            row: dict[str, Any] = {"mode": mode, "sessions": n}
            # alternate the two sides so that load drift on a shared machine hits both
            for name, g in (("per_session", single), ("engine", engine)):
                wall, lat = runners[mode](g, n, ids)
                row[f"{name}_tokens_per_s"] = round(n * tokens / wall, 1)
                row[f"{name}_p50_ms"] = round(statistics.median(lat) * 1000, 4)
                row[f"{name}_p99_ms"] = round(_pct(lat, 0.99) * 1000, 4)
            row["speedup"] = round(row["engine_tokens_per_s"] / row["per_session_tokens_per_s"], 2)
            rows.append(row)
            print(
                f"{mode:>7} N={n:>3}: engine {row['engine_tokens_per_s']:>9} tok/s "
                f"(p50 {row['engine_p50_ms']} ms, p99 {row['engine_p99_ms']} ms) | per-session "
                f"{row['per_session_tokens_per_s']:>9} tok/s (p50 {row['per_session_p50_ms']} ms, "
                f"p99 {row['per_session_p99_ms']} ms) -> {row['speedup']}x",
                flush=True,
            )
    out: dict[str, Any] = {
        "model": model,
        "device": str(engine.device),
        "dtype": str(engine.dtype).removeprefix("torch."),
        "threads": torch.get_num_threads(),
        "tokens_per_session": tokens,
        "rows": rows,
        "engine_stats": engine.stats(),
    }
    for r in rows:
        if r["sessions"] == 32:
            out.setdefault("batched_vs_per_session_at_32", r["speedup"])
            out[f"batched_vs_per_session_at_32_{r['mode']}"] = r["speedup"]
        if r["sessions"] == 1:
            ratio = round(r["engine_p50_ms"] / r["per_session_p50_ms"], 3)
            out.setdefault("single_session_latency_ratio", ratio)
            out[f"single_session_latency_ratio_{r['mode']}"] = ratio
    return out


def main() -> None:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", help="Stream checkpoint (folder or Hub id); default: tiny")
    parser.add_argument("--tokens", type=int, default=256, help="answer tokens per session")
    parser.add_argument("--sizes", default="1,8,32,64", help="concurrent sessions, comma list")
    parser.add_argument("--modes", default="threads,asyncio")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (0: torch's)")
    parser.add_argument("--json", action="store_true", help="end with one JSON line")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    modes = args.modes.split(",")
    if any(m not in ("threads", "asyncio") for m in modes):
        raise SystemExit("--modes takes threads and/or asyncio")
    res = run(args.model, args.tokens, sizes, modes, args.threads)
    if args.json:
        print(json.dumps(res))


if __name__ == "__main__":
    main()
