"""Stream moderation cost per token: our cached session vs recomputing the whole sequence.

The official remote code re-runs the whole growing sequence for every new token. This script
feeds a 1,024-token response one token at a time and reports, side by side in one run:

(a) ``speedup``: median per-token time of recomputing (prompt + response so far, no cache) over
    our cached session, at positions 512-1,024 (the recompute side is sampled);
(b) ``flatness``: our median per-token cost near token 1,024 divided by near token 64 (two
    sessions fed in alternation, so that load on a shared machine hits both alike);
(c) ``chunk16_tokens_per_s``: our throughput when the response is fed in chunks of 16 ids.

Usage: ``python benchmarks/bench_stream.py [--model PATH] [--json] [--threads N]``. Without ``--model`` it
builds (or reuses) the tiny test checkpoint. With ``--json`` the last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from typing import Any

N_TOKENS = 1024


def _response_ids(tok: Any, n: int) -> list[int]:
    text = (
        "The capital of Australia is Canberra. Plants use sunlight to turn water and air into "
        "sugar. Start with a few chords and practise for fifteen minutes a day. "
    )
    ids: list[int] = []
    while len(ids) < n:
        ids += tok(text, add_special_tokens=False)["input_ids"]
    return ids[:n]


def _recompute_time(guard: Any, ids: list[int]) -> float:
    """One token's cost in the official way: the whole sequence, no cache, both head paths at
    every position (the official forward's outputs)."""
    torch = __import__("torch")
    model = guard.model
    start = time.perf_counter()
    with torch.inference_mode():
        x = torch.tensor([ids], device=guard.device)
        hidden = model.model(input_ids=x, use_cache=False).last_hidden_state
        model.heads(hidden)
    if guard.device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def run(model: str | None, threads: int | None = 1) -> dict[str, Any]:
    """Measure and return the figures (see module docstring)."""
    torch = __import__("torch")
    if threads:
        torch.set_num_threads(threads)
    from qwen3guard_integrations import Qwen3StreamGuard

    if model is None:
        from qwen3guard_integrations.testing import build_tiny_checkpoints

        model = str(build_tiny_checkpoints().stream)
    guard = Qwen3StreamGuard.from_pretrained(model)
    ids = _response_ids(guard.tokenizer, N_TOKENS + 32)
    prompt = "Can you tell me a few facts about Australia, plants and guitars?"
    sync = torch.cuda.synchronize if guard.device.type == "cuda" else (lambda: None)

    with guard.session(prompt) as s:  # warm-up
        for t in ids[:32]:
            s.feed([t])

    def timed_feed(session: Any, token: int) -> float:
        start = time.perf_counter()
        session.feed([token])
        sync()
        return time.perf_counter() - start

    # (a) one token at a time; the recompute side is timed right after the cached step at the
    # sampled positions, so both see the same machine load
    sampled = set(range(512, N_TOKENS, 32))  # 16 positions
    cached: list[float] = []
    recompute: list[float] = []
    late = guard.session(prompt)
    prefix = list(late.prompt_ids)
    for p in range(N_TOKENS):
        cached.append(timed_feed(late, ids[p]))
        if p in sampled:
            recompute.append(_recompute_time(guard, prefix + ids[: p + 1]))
    # (b) flatness: a second session near token 64 and the first one past token 1024, fed in
    # alternation (load drift on a shared machine hits both sides alike)
    with guard.session(prompt) as early:
        for t in ids[:48]:
            early.feed([t])
        near_64: list[float] = []
        near_1024: list[float] = []
        for k in range(32):
            near_1024.append(timed_feed(late, ids[N_TOKENS + k]))
            near_64.append(timed_feed(early, ids[48 + k]))
    late.close()

    start = time.perf_counter()
    with guard.session(prompt) as s:
        for i in range(0, N_TOKENS, 16):
            s.feed(ids[i : i + 16])
        sync()
    chunk_s = time.perf_counter() - start

    cached_late = statistics.median(cached[512:])
    return {
        "model": model,
        "device": str(guard.device),
        "dtype": str(guard.dtype).removeprefix("torch."),
        "threads": torch.get_num_threads(),
        "prompt_tokens": len(prefix),
        "response_tokens": N_TOKENS,
        "cached_ms_per_token_512_1024": round(cached_late * 1000, 4),
        "recompute_ms_per_token_512_1024": round(statistics.median(recompute) * 1000, 4),
        "speedup": round(statistics.median(recompute) / cached_late, 2),
        "cached_ms_near_64": round(statistics.median(near_64) * 1000, 4),
        "cached_ms_near_1024": round(statistics.median(near_1024) * 1000, 4),
        "flatness": round(statistics.median(near_1024) / statistics.median(near_64), 3),
        "cached_p99_ms": round(sorted(cached)[int(0.99 * len(cached))] * 1000, 4),
        "chunk16_tokens_per_s": round(N_TOKENS / chunk_s, 1),
    }


def main() -> None:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", help="Stream checkpoint (folder or Hub id); default: tiny")
    parser.add_argument("--json", action="store_true", help="end with one JSON line")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="CPU threads for torch (default 1: stable on a shared machine; 0 keeps torch's)",
    )
    args = parser.parse_args()
    res = run(args.model, args.threads)
    print(f"model {res['model']} on {res['device']} ({res['dtype']}, {res['threads']} threads)")
    print(
        f"(a) per token at 512-1024: cached {res['cached_ms_per_token_512_1024']} ms, "
        f"recompute {res['recompute_ms_per_token_512_1024']} ms -> {res['speedup']}x faster"
    )
    print(
        f"(b) flatness: {res['cached_ms_near_1024']} ms near 1024 / "
        f"{res['cached_ms_near_64']} ms near 64 = {res['flatness']}"
    )
    print(f"(c) chunks of 16: {res['chunk16_tokens_per_s']} tokens/s")
    if args.json:
        print(json.dumps(res))


if __name__ == "__main__":
    main()
