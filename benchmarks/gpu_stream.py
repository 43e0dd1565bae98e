"""Per-token latency of cached Stream moderation on a GPU at the official 0.6B and 4B shapes.

Random weights (latency does not depend on them), bf16, one CUDA device. For each shape: an
81-token prompt, then ``--tokens`` response tokens fed one at a time through the cached runner,
and the official way (recompute the whole sequence) at a few positions for comparison. Prints
p50/p99 per-token latency; ``--json`` ends with one JSON line.

Usage: ``python benchmarks/gpu_stream.py [--tokens 512] [--shapes 0.6B,4B] [--json]``.
Exits with a clear message when no CUDA device is present.
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


def _loaded(name: str, torch: Any, transformers: Any) -> Any:
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
    device = torch.device("cuda")
    with torch.device(device):
        model = Qwen3GuardStreamModel(config)
    for p in model.parameters():
        p.data = p.data.to(torch.bfloat16)
    model.eval()
    return LoadedStreamModel(
        model, config, StreamLabels(), Path("."), f"random-{name}", device, torch.bfloat16
    )


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
    args = parser.parse_args()
    try:
        import torch
    except ImportError:
        sys.exit(
            "gpu_stream.py needs torch with CUDA: pip install 'qwen3guard-integrations[transformers]'"
        )
    if not torch.cuda.is_available():
        sys.exit("gpu_stream.py needs a CUDA GPU; none is available here (nothing was measured)")
    results = []
    for name in args.shapes.split(","):
        if name not in SHAPES:
            sys.exit(f"unknown shape {name!r}; choose from {', '.join(SHAPES)}")
        res = bench(name, args.tokens)
        results.append(res)
        print(
            f"{name}: cached p50 {res['cached_p50_ms']} ms, p99 {res['cached_p99_ms']} ms per token; "
            f"recompute p50 {res['recompute_p50_ms_second_half']} ms ({res['device']})"
        )
    if args.json:
        print(json.dumps({"results": results}))


if __name__ == "__main__":
    main()
