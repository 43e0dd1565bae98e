"""The guard as a service on loopback: what a remote Stream session costs over a local one.

Starts ``qwen3guard serve`` in a subprocess on 127.0.0.1 and measures, side by side in one run:

(a) ``feed_overhead_ms``: the median per-feed round-trip overhead of a remote session over a
    local one (one token id per feed; the local and the remote feed alternate token by token,
    so load on a shared machine hits both alike), with both medians;
(b) ``tokens_per_s``: aggregate moderated tokens per second of 32 concurrent sessions, remote
    (against the one server) and local (32 threads on one in-process model), fed in chunks of
    ``--chunk`` ids, and their ratio.

Usage: ``python benchmarks/bench_service.py [--model PATH] [--json] [--sessions 32] [--threads 1]``. Without
``--model`` it builds (or reuses) the tiny Stream checkpoint. With ``--json`` the last line is one
JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
TEXT = (
    "The capital of Australia is Canberra. Plants use sunlight to turn water and air into "
    "sugar. Start with a few chords and practise for fifteen minutes a day. "
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _start_server(model: str, port: int, concurrency: int, threads: int) -> subprocess.Popen[bytes]:
    import httpx

    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": str(threads)}
    cmd = [
        sys.executable, "-m", "qwen3guard_integrations.cli", "serve", "--stream-model", model,
        "--host", "127.0.0.1", "--port", str(port), "--device", "cpu", "--log-level", "warning",
        "--pieces-per-second", "100000", "--max-concurrency", str(concurrency),
        "--sessions-per-connection", "1",
    ]  # fmt: skip
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited with {proc.returncode}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/ready", timeout=2).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    proc.kill()
    raise RuntimeError("the server did not come up")


def run(
    model: str | None, sessions: int = 32, tokens: int = 64, chunk: int = 4, threads: int = 1
) -> dict[str, Any]:
    """Measure and return the figures (see the module docstring)."""
    torch = __import__("torch")
    torch.set_num_threads(threads)  # the same torch threads here and in the server
    from qwen3guard_integrations import Qwen3StreamGuard

    if model is None:
        from qwen3guard_integrations.testing import build_tiny_checkpoints

        model = str(build_tiny_checkpoints().stream)
    local = Qwen3StreamGuard.from_pretrained(model, device="cpu")
    ids: list[int] = []
    while len(ids) < tokens * 4:
        ids += local.tokenizer(TEXT, add_special_tokens=False)["input_ids"]
    port = _free_port()
    proc = _start_server(model, port, concurrency=8, threads=threads)
    try:
        remote = Qwen3StreamGuard.from_server(f"http://127.0.0.1:{port}")
        prompt = "Tell me a few facts about Australia, plants and guitars."
        # (a) per-feed round trip, alternating token by token
        local_t: list[float] = []
        remote_t: list[float] = []
        with local.session(prompt) as ls, remote.session(prompt) as rs:
            for k, t in enumerate(ids[: tokens * 4]):
                for sess, out in ((ls, local_t), (rs, remote_t)):
                    start = time.perf_counter()
                    sess.feed([t])
                    if k >= 16:  # warm-up
                        out.append(time.perf_counter() - start)
        overhead = statistics.median(r - loc for r, loc in zip(remote_t, local_t))

        # (b) many concurrent sessions
        def one(guard: Any) -> int:
            with guard.session(prompt) as s:
                for i in range(0, tokens, chunk):
                    s.feed(ids[i : i + chunk])
                return tokens

        def aggregate(guard: Any) -> float:
            start = time.perf_counter()
            with ThreadPoolExecutor(sessions) as pool:
                done = sum(pool.map(lambda _: one(guard), range(sessions)))
            return done / (time.perf_counter() - start)

        aggregate(remote)  # warm-up
        remote_tps = aggregate(remote)
        local_tps = aggregate(local)
    finally:
        proc.terminate()
        proc.wait(30)
    return {
        "model": model,
        "feed_local_ms": statistics.median(local_t) * 1000,
        "feed_remote_ms": statistics.median(remote_t) * 1000,
        "feed_overhead_ms": overhead * 1000,
        "sessions": sessions,
        "chunk": chunk,
        "threads": threads,
        "remote_tokens_per_s": remote_tps,
        "local_tokens_per_s": local_tps,
        "remote_over_local": remote_tps / local_tps,
    }


def main() -> None:
    """Command line."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", help="Stream checkpoint (default: the tiny one)")
    p.add_argument("--sessions", type=int, default=32)
    p.add_argument("--tokens", type=int, default=64, help="response tokens per session")
    p.add_argument("--chunk", type=int, default=4, help="ids per feed in (b)")
    p.add_argument("--threads", type=int, default=1, help="torch threads, here and in the server")
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    figures = run(args.model, args.sessions, args.tokens, args.chunk, args.threads)
    if args.json:
        print(json.dumps(figures))
        return
    print(
        f"per feed (1 id): local {figures['feed_local_ms']:.2f} ms, remote "
        f"{figures['feed_remote_ms']:.2f} ms, overhead {figures['feed_overhead_ms']:.2f} ms"
    )
    print(
        f"{figures['sessions']} concurrent sessions ({figures['chunk']} ids per feed): remote "
        f"{figures['remote_tokens_per_s']:.0f} tokens/s, local {figures['local_tokens_per_s']:.0f} "
        f"tokens/s (remote/local {figures['remote_over_local']:.2f})"
    )


if __name__ == "__main__":
    main()
