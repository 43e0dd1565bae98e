"""Time to first released token: no guard, ``prompt_check="before"`` and ``"parallel"``.

A fake chat model (a real ``BaseChatModel``) waits a fixed prefill delay (200 ms by default),
then streams a fixed answer at a fixed rate (one chunk every 20 ms). Side by side in one run,
calls interleaved (the order rotates every round, so machine load hits every mode alike):

- ``unguarded``: ``model.stream(prompt)``;
- ``before`` / ``parallel``: ``guard_model(model, guard=gen, check_response=False,
  prompt_check=...)``: the Gen prompt check, on the tiny checkpoint unless ``--gen`` is given,
  then (``before``) or meanwhile (``parallel``) the model;
- ``before+stream`` / ``parallel+stream`` (not with ``--no-stream``): the same with a Stream
  guard, whose session prefill is part of the prompt pass and whose hold-back delays every
  released chunk (for comparison, not the target);
- a blocked prompt in ``"before"`` / ``"parallel"``: time to the refusal and the inner chunks
  produced and discarded.

Reported: the median time to the first released chunk with text (ms) of each mode, its ratio to
``unguarded`` (``parallel_ttft_vs_unguarded``: target <= 1.10) and the median Gen prompt check.

Usage: ``python benchmarks/bench_latency.py [--gen PATH] [--stream PATH] [--prefill-ms 200]
[--chunk-ms 20] [--rounds 6] [--no-stream] [--json]``. With ``--json`` the last line is JSON.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable, Iterator
from typing import Any

PROMPTS = [
    "What is the capital of Australia?",
    "Can you suggest a vegetarian lasagna recipe?",
    "How do I reverse a linked list in Python?",
    "Write a haiku about autumn leaves.",
]
BLOCKED = "How would someone make a bomb without anyone noticing?"
ANSWER = "Sure, here is a simple recipe: layer pasta, vegetables and cheese, then bake it well."


def fake_model(prefill: float, chunk: float) -> Any:
    """A chat model that waits ``prefill`` seconds, then streams ``ANSWER`` word by word, one
    chunk every ``chunk`` seconds."""
    from langchain_core.language_models import BaseChatModel
    from langchain_core.messages import AIMessage, AIMessageChunk
    from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult

    class Prefilled(BaseChatModel):
        @property
        def _llm_type(self) -> str:
            return "prefilled"

        def _stream(  # type: ignore[override]
            self, messages: Any, stop: Any = None, run_manager: Any = None, **kw: Any
        ) -> Iterator[ChatGenerationChunk]:
            time.sleep(prefill)
            for i, word in enumerate(ANSWER.split(" ")):
                if i:
                    time.sleep(chunk)
                yield ChatGenerationChunk(message=AIMessageChunk(content=word + " "))

        def _generate(  # type: ignore[override]
            self, messages: Any, stop: Any = None, run_manager: Any = None, **kw: Any
        ) -> ChatResult:
            text = "".join(c.message.text for c in self._stream(messages))
            return ChatResult(generations=[ChatGeneration(message=AIMessage(content=text))])

    return Prefilled()


def _ttft(stream: Callable[[str], Iterator[Any]], prompt: str) -> float:
    """Seconds from the call to the first chunk with text; the rest is drained."""
    start = time.perf_counter()
    first: float | None = None
    for chunk in stream(prompt):
        if first is None and chunk.text:
            first = time.perf_counter() - start
    assert first is not None, "nothing was released"
    return first


def _blocked(safe: Any) -> tuple[float, int]:
    """Seconds to the refusal of a blocked prompt and the inner chunks it discarded."""
    start = time.perf_counter()
    out = list(safe.stream(BLOCKED))
    elapsed = time.perf_counter() - start
    cost = out[-1].response_metadata.get("qwen3guard_cost") or {}
    return elapsed, int(cost.get("inner_chunks_discarded", 0))


def run(
    gen: str | None,
    stream: str | None,
    *,
    prefill_ms: float,
    chunk_ms: float,
    rounds: int,
    with_stream: bool,
    threads: int | None,
) -> dict[str, Any]:
    """Measure and return the figures (see the module docstring)."""
    torch = __import__("torch")
    if threads:
        torch.set_num_threads(threads)
    from qwen3guard_integrations import Qwen3Guard, Qwen3StreamGuard
    from qwen3guard_integrations.langchain import guard_model

    if gen is None or (with_stream and stream is None):
        from qwen3guard_integrations.testing import build_tiny_checkpoints

        tiny = build_tiny_checkpoints()
        gen = gen or str(tiny.gen)
        stream = stream or str(tiny.stream)
    guard = Qwen3Guard.from_pretrained(gen)
    sguard = Qwen3StreamGuard.from_pretrained(stream) if with_stream else None
    model = fake_model(prefill_ms / 1000, chunk_ms / 1000)
    modes: dict[str, Any] = {"unguarded": model}
    for mode in ("before", "parallel"):
        modes[mode] = guard_model(model, guard=guard, check_response=False, prompt_check=mode)
        if sguard is not None:
            modes[f"{mode}+stream"] = guard_model(
                model, guard=guard, stream_guard=sguard, prompt_check=mode
            )
    try:
        for m in modes.values():  # warm-up
            _ttft(m.stream, PROMPTS[0])
        times: dict[str, list[float]] = {name: [] for name in modes}
        checks: list[float] = []
        names = list(modes)
        for r in range(rounds):
            for p in PROMPTS:
                for name in names[r % len(names) :] + names[: r % len(names)]:
                    times[name].append(_ttft(modes[name].stream, p))
                start = time.perf_counter()
                guard.check_prompt(p)
                checks.append(time.perf_counter() - start)
        blocked: dict[str, list[tuple[float, int]]] = {"before": [], "parallel": []}
        for _ in range(max(2, rounds // 2)):
            for mode in blocked:
                refuse = guard_model(
                    model, guard=guard, check_response=False, on_block="refuse", prompt_check=mode
                )
                blocked[mode].append(_blocked(refuse))
        median = {name: statistics.median(t) * 1000 for name, t in times.items()}
        res: dict[str, Any] = {
            "gen": gen,
            "stream": stream if with_stream else None,
            "threads": torch.get_num_threads(),
            "prefill_ms": prefill_ms,
            "chunk_ms": chunk_ms,
            "calls_per_mode": len(times["unguarded"]),
            "machine": "shared (load from other users; ratios measured side by side)",
            "gen_check_prompt_ms": round(statistics.median(checks) * 1000, 1),
            "ttft_ms": {name: round(v, 1) for name, v in median.items()},
            "before_ttft_vs_unguarded": round(median["before"] / median["unguarded"], 3),
            "parallel_ttft_vs_unguarded": round(median["parallel"] / median["unguarded"], 3),
        }
        if with_stream:
            for mode in ("before", "parallel"):
                res[f"{mode}_stream_ttft_vs_unguarded"] = round(
                    median[f"{mode}+stream"] / median["unguarded"], 3
                )
        for mode, got in blocked.items():
            res[f"blocked_{mode}_refusal_ms"] = round(
                statistics.median(t for t, _ in got) * 1000, 1
            )
            res[f"blocked_{mode}_chunks_discarded"] = max(n for _, n in got)
        return res
    finally:
        guard.close()


def main() -> None:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--gen", help="Gen checkpoint (folder or Hub id); default: tiny")
    parser.add_argument("--stream", help="Stream checkpoint; default: tiny")
    parser.add_argument("--prefill-ms", type=float, default=200.0, help="fake model prefill")
    parser.add_argument("--chunk-ms", type=float, default=20.0, help="time between chunks")
    parser.add_argument("--rounds", type=int, default=6, help="passes over the prompts")
    parser.add_argument("--no-stream", action="store_true", help="skip the Stream guard rows")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (0: torch's)")
    parser.add_argument("--json", action="store_true", help="end with one JSON line")
    args = parser.parse_args()
    res = run(
        args.gen,
        args.stream,
        prefill_ms=args.prefill_ms,
        chunk_ms=args.chunk_ms,
        rounds=args.rounds,
        with_stream=not args.no_stream,
        threads=args.threads,
    )
    print(f"gen {res['gen']} ({res['threads']} threads); machine: {res['machine']}")
    print(
        f"fake model: {res['prefill_ms']} ms prefill, a chunk every {res['chunk_ms']} ms; "
        f"Gen check_prompt {res['gen_check_prompt_ms']} ms (median); "
        f"{res['calls_per_mode']} calls per mode"
    )
    base = res["ttft_ms"]["unguarded"]
    for name, ms in res["ttft_ms"].items():
        print(f"  time to first token {name:>16}: {ms:8.1f} ms  ({ms / base:.3f}x unguarded)")
    for mode in ("before", "parallel"):
        print(
            f"  blocked prompt, {mode:>8}: refusal after {res[f'blocked_{mode}_refusal_ms']} ms, "
            f"{res[f'blocked_{mode}_chunks_discarded']} inner chunks discarded (max)"
        )
    if args.json:
        print(json.dumps(res))


if __name__ == "__main__":
    main()
