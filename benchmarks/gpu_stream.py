"""Per-token latency of cached Stream moderation on a GPU at the official 0.6B and 4B shapes.

Random weights (latency does not depend on them), bf16, one CUDA device. For each shape: an
81-token prompt, then ``--tokens`` response tokens fed one at a time through the cached runner,
and the official way (recompute the whole sequence) at a few positions for comparison. Prints
p50/p99 per-token latency; ``--json`` ends with one JSON line.

With ``--engine-sizes 1,8,32,64`` it also sweeps the batched `StreamEngine` at each shape: N
sessions with the 81-token prompt prefilled, then ``--engine-tokens`` steps in which every
session moderates one token (driven through ``StreamEngine.arun`` from asyncio, so the
scheduler's own cost is in the figure). Reported per N: aggregate moderated tokens/s, p50/p99
step latency (``stats()``), p50/p99 per-token latency seen by a session, and the same N
sessions stepped one by one through the per-session runner for comparison.

Usage: ``python benchmarks/gpu_stream.py [--tokens 512] [--shapes 0.6B,4B]
[--engine-sizes 1,8,32,64] [--engine-tokens 256] [--json]``. Exits with a clear message when no
CUDA device is present; ``--device cpu --shapes tiny`` runs the same code at a toy shape on the
CPU (a smoke test of the script, not a measurement).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

SHAPES: dict[str, dict[str, int]] = {
    "tiny": dict(
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=16,
        intermediate_size=192,
    ),
    "0.6B": dict(
        hidden_size=1024,
        num_hidden_layers=28,
        num_attention_heads=16,
        num_key_value_heads=8,
        head_dim=128,
        intermediate_size=3072,
    ),
    "4B": dict(
        hidden_size=2560,
        num_hidden_layers=36,
        num_attention_heads=32,
        num_key_value_heads=8,
        head_dim=128,
        intermediate_size=9728,
    ),
}
VOCAB = 151936
GUARD_INNER = 512
PROMPT_TOKENS = 81


def _loaded(name: str, torch: Any, transformers: Any, device: str = "cuda") -> Any:
    from qwen3guard_integrations.backends.stream.loading import LoadedStreamModel, StreamLabels
    from qwen3guard_integrations.backends.stream.model import Qwen3GuardStreamModel

    config = transformers.Qwen3Config(
        vocab_size=VOCAB,
        max_position_embeddings=40960,
        rms_norm_eps=1e-6,
        rope_theta=1_000_000.0,
        tie_word_embeddings=True,
        guard_inner_size=GUARD_INNER,
        num_risk_level=3,
        num_category=8,
        num_query_risk_level=3,
        num_query_category=9,
        **SHAPES[name],
    )
    dev = torch.device(device)
    dtype = torch.bfloat16 if dev.type == "cuda" else torch.float32
    with dev:
        model = Qwen3GuardStreamModel(config)
    for p in model.parameters():
        p.data = p.data.to(dtype)
    model.eval()
    return LoadedStreamModel(model, config, StreamLabels(), Path("."), f"random-{name}", dev, dtype)


def _sync(torch: Any, device: Any) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


async def _drive(
    engine: Any, handles: list[Any], ids: list[list[int]], n_tokens: int, per_token: list[float]
) -> float:
    """Every session feeds ``n_tokens`` tokens one at a time through ``engine.arun``."""
    import asyncio

    async def one(h: Any, row: list[int]) -> None:
        for t in row[PROMPT_TOKENS + 1 : PROMPT_TOKENS + 1 + n_tokens]:
            a = time.perf_counter()
            await engine.arun(h, [t])
            per_token.append(time.perf_counter() - a)

    start = time.perf_counter()
    await asyncio.gather(*(one(h, r) for h, r in zip(handles, ids)))
    return time.perf_counter() - start


def bench_engine(
    name: str, sizes: list[int], n_tokens: int, device: str = "cuda"
) -> list[dict[str, Any]]:
    """The engine sweep at one shape (see the module docstring)."""
    import asyncio

    torch = __import__("torch")
    transformers = __import__("transformers")
    from qwen3guard_integrations.backends.stream.engine import StreamEngine
    from qwen3guard_integrations.backends.stream.runtime import StreamRunner

    runner = StreamRunner(_loaded(name, torch, transformers, device))
    dev = runner.loaded.device
    g = torch.Generator().manual_seed(1)
    top = max(sizes)
    ids = torch.randint(0, 150000, (top, PROMPT_TOKENS + n_tokens + 1), generator=g).tolist()
    rows: list[dict[str, Any]] = []
    for n in sizes:
        engine = StreamEngine(
            runner, max_sessions=n, max_cached_tokens=n * (PROMPT_TOKENS + n_tokens + 16)
        )
        handles = [engine.open() for _ in range(n)]
        for h, row in zip(handles, ids):
            engine.run(h, row[:PROMPT_TOKENS], query=True)
        for h, row in zip(handles, ids):  # warm-up: a few batched steps
            engine.run(h, row[PROMPT_TOKENS : PROMPT_TOKENS + 1])
        engine.counters.latency.clear()
        per_token: list[float] = []
        wall = asyncio.run(_drive(engine, handles, ids, n_tokens, per_token))
        _sync(torch, dev)
        stats = engine.stats()
        engine.close()
        # the same n sessions stepped one by one on their own caches (today's path), sampled
        caches = [runner.new_cache() for _ in range(n)]
        for c, row in zip(caches, ids):
            runner.forward(row[:PROMPT_TOKENS], c)
            runner.forward(row[PROMPT_TOKENS : PROMPT_TOKENS + 1], c, query=False)
        steps = min(n_tokens, 32)
        _sync(torch, dev)
        start = time.perf_counter()
        for j in range(1, steps + 1):
            for c, row in zip(caches, ids):
                runner.forward([row[PROMPT_TOKENS + j]], c, query=False)
        _sync(torch, dev)
        single_wall = time.perf_counter() - start
        del caches
        rows.append(
            {
                "shape": name,
                "sessions": n,
                "tokens_per_session": n_tokens,
                "engine_tokens_per_s": round(n * n_tokens / wall, 1),
                "engine_step_p50_ms": stats["step_ms_p50"],
                "engine_step_p99_ms": stats["step_ms_p99"],
                "engine_token_p50_ms": round(statistics.median(per_token) * 1000, 3),
                "engine_token_p99_ms": round(_pct(per_token, 0.99) * 1000, 3),
                "engine_batch_size_mean": stats["batch_size_mean"],
                "per_session_tokens_per_s": round(n * steps / single_wall, 1),
            }
        )
        rows[-1]["speedup"] = round(
            rows[-1]["engine_tokens_per_s"] / rows[-1]["per_session_tokens_per_s"], 2
        )
    if dev.type == "cuda":
        torch.cuda.empty_cache()
    return rows


def _pct(xs: list[float], q: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, int(q * len(s)))]


def bench(name: str, n_tokens: int) -> dict[str, Any]:
    """Measure one shape."""
    torch = __import__("torch")
    transformers = __import__("transformers")
    from qwen3guard_integrations.backends.stream.runtime import StreamRunner

    runner = StreamRunner(_loaded(name, torch, transformers))
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, 150000, (PROMPT_TOKENS + n_tokens,), generator=g).tolist()
    prompt, response = ids[:PROMPT_TOKENS], ids[PROMPT_TOKENS:]
    warm = runner.new_cache()
    runner.forward(prompt, warm)
    for t in response[:16]:
        runner.forward([t], warm)
    torch.cuda.synchronize()
    cache = runner.new_cache()
    runner.forward(prompt, cache)
    times: list[float] = []
    for t in response:
        torch.cuda.synchronize()
        start = time.perf_counter()
        runner.forward([t], cache)  # includes the copy of the logits to the host
        torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    recompute: list[float] = []
    model = runner.model
    for p in range(n_tokens // 2, n_tokens, max(1, n_tokens // 16)):
        x = torch.tensor([prompt + response[: p + 1]], device="cuda")
        torch.cuda.synchronize()
        start = time.perf_counter()
        with torch.inference_mode():
            model.heads(model.model(input_ids=x, use_cache=False).last_hidden_state)
        torch.cuda.synchronize()
        recompute.append(time.perf_counter() - start)
    del cache, runner, model
    torch.cuda.empty_cache()
    return {
        "shape": name,
        "device": torch.cuda.get_device_name(0),
        "prompt_tokens": PROMPT_TOKENS,
        "response_tokens": n_tokens,
        "cached_p50_ms": round(statistics.median(times) * 1000, 3),
        "cached_p99_ms": round(_pct(times, 0.99) * 1000, 3),
        "recompute_p50_ms_second_half": round(statistics.median(recompute) * 1000, 3),
        "recompute_p99_ms_second_half": round(_pct(recompute, 0.99) * 1000, 3),
    }


def main() -> None:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tokens", type=int, default=512)
    parser.add_argument("--shapes", default="0.6B,4B")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--engine-sizes", default="", help="e.g. 1,8,32,64: the engine sweep")
    parser.add_argument("--engine-tokens", type=int, default=256)
    parser.add_argument("--device", default="cuda", help="cuda, or cpu for a smoke test")
    args = parser.parse_args()
    try:
        import torch
    except ImportError:
        sys.exit(
            "gpu_stream.py needs torch with CUDA: pip install 'qwen3guard-integrations[transformers]'"
        )
    if args.device == "cuda" and not torch.cuda.is_available():
        sys.exit("gpu_stream.py needs a CUDA GPU; none is available here (nothing was measured)")
    results: list[dict[str, Any]] = []
    engine_rows: list[dict[str, Any]] = []
    sizes = [int(x) for x in args.engine_sizes.split(",") if x]
    for name in args.shapes.split(","):
        if name not in SHAPES:
            sys.exit(f"unknown shape {name!r}; choose from {', '.join(SHAPES)}")
        if sizes:
            for row in bench_engine(name, sizes, args.engine_tokens, args.device):
                engine_rows.append(row)
                print(
                    f"{name} engine N={row['sessions']}: {row['engine_tokens_per_s']} tok/s, "
                    f"step p50 {row['engine_step_p50_ms']} / p99 {row['engine_step_p99_ms']} ms, "
                    f"per-session stepping {row['per_session_tokens_per_s']} tok/s "
                    f"-> {row['speedup']}x",
                    flush=True,
                )
        if args.device != "cuda":
            continue  # the per-token part below is CUDA only
        res = bench(name, args.tokens)
        results.append(res)
        print(
            f"{name}: cached p50 {res['cached_p50_ms']} ms, p99 {res['cached_p99_ms']} ms per token; "
            f"recompute p50 {res['recompute_p50_ms_second_half']} ms ({res['device']})"
        )
    if args.json:
        print(json.dumps({"results": results, "engine": engine_rows}))


if __name__ == "__main__":
    main()
