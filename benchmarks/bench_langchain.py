"""LangChain adapter overhead, measured side by side in one run.

(a) ``prompt_guard_overhead``: median time of ``PromptGuard(guard).invoke(prompt)`` over the
    median time of ``guard.check_prompt(prompt)`` on the same prompts, calls interleaved so machine
    load hits both alike (target <= 1.10x).
(b) ``StreamGuard`` per-chunk delay: a fake chat model streams an answer word by word; each
    chunk's text is timestamped when the model emits it and when ``model | StreamGuard`` releases
    it. Reported: the median and p95 added delay per released character's chunk (ms), the median
    number of chunks a piece of text is held back, and the same stream passed through a plain
    ``RunnablePassthrough`` as the baseline cost of an LCEL stage.

Usage: ``python benchmarks/bench_langchain.py [--gen PATH] [--stream PATH] [--json]``. Without
paths it builds (or reuses) the tiny test checkpoints. With ``--json`` the last line is JSON.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from typing import Any

PROMPTS = [
    "What is the capital of Australia?",
    "Can you suggest a vegetarian lasagna recipe?",
    "How do I reverse a linked list in Python?",
    "Write a haiku about autumn leaves.",
    "Recommend three science fiction novels.",
    "How many moons does Jupiter have?",
    "Help me plan a birthday party for my daughter.",
    "What are the health benefits of green tea?",
]
ANSWER = (
    "Sure, here is a simple recipe: layer pasta, vegetables and cheese, then bake. Start with "
    "a few chords and practise for fifteen minutes a day. Plants use sunlight to turn water and "
    "air into sugar. The capital of Australia is Canberra. Try Dune, Foundation and The Left "
    "Hand of Darkness."
)


def _overhead(guard: Any, rounds: int) -> dict[str, Any]:
    from qwen3guard_integrations.langchain import PromptGuard

    pg = PromptGuard(guard)
    for p in PROMPTS:  # warm-up
        guard.check_prompt(p)
        pg.invoke(p)
    direct: list[float] = []
    wrapped: list[float] = []
    for r in range(rounds):
        for p in PROMPTS:
            order = (0, 1) if r % 2 == 0 else (1, 0)
            for which in order:
                start = time.perf_counter()
                if which == 0:
                    guard.check_prompt(p)
                else:
                    pg.invoke(p)
                (direct if which == 0 else wrapped).append(time.perf_counter() - start)
    d, w = statistics.median(direct), statistics.median(wrapped)
    return {
        "check_prompt_ms": round(d * 1000, 3),
        "prompt_guard_invoke_ms": round(w * 1000, 3),
        "prompt_guard_overhead": round(w / d, 3),
        "prompt_guard_added_ms": round((w - d) * 1000, 3),
    }


def _release_delays(chain: Any, n_runs: int) -> tuple[list[float], list[int]]:
    """Per emitted chunk: ms from emission by the model to release of its last character."""
    from langchain_core.callbacks import BaseCallbackHandler

    delays: list[float] = []
    held: list[int] = []

    class Stamp(BaseCallbackHandler):
        def __init__(self) -> None:
            self.emitted: list[tuple[int, float, int]] = []  # (end offset, time, chunk number)

        def on_llm_new_token(self, token: Any, **kw: Any) -> None:
            end = (self.emitted[-1][0] if self.emitted else 0) + len(token)
            self.emitted.append((end, time.perf_counter(), len(self.emitted)))

    for _ in range(n_runs):
        stamp = Stamp()
        emitted = stamp.emitted
        released = 0
        k = 0
        for chunk in chain.stream("Can you help me?", {"callbacks": [stamp]}):
            now = time.perf_counter()
            released += len(chunk if isinstance(chunk, str) else chunk.content)
            while k < len(emitted) and emitted[k][0] <= released:
                if emitted[k][0] > (emitted[k - 1][0] if k else 0):  # chunks with text only
                    delays.append((now - emitted[k][1]) * 1000)
                    held.append(len(emitted) - 1 - emitted[k][2])
                k += 1
    return delays, held


def _stream_delay(stream_guard: Any, runs: int) -> dict[str, Any]:
    from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
    from langchain_core.runnables import RunnablePassthrough

    from qwen3guard_integrations.langchain import StreamGuard

    def model() -> Any:
        return GenericFakeChatModel(messages=iter([ANSWER] * runs))

    guarded = model() | StreamGuard(stream_guard)
    plain = model() | RunnablePassthrough()
    _release_delays(model() | StreamGuard(stream_guard), 1)  # warm-up (fresh model)
    g_delays, g_held = _release_delays(guarded, runs)
    p_delays, _ = _release_delays(plain, runs)
    q = statistics.quantiles(g_delays, n=20)
    return {
        "chunks_per_answer": len(g_delays) // runs,
        "stream_guard_delay_ms_median": round(statistics.median(g_delays), 3),
        "stream_guard_delay_ms_p95": round(q[18], 3),
        "stream_guard_chunks_held_median": statistics.median(g_held),
        "passthrough_delay_ms_median": round(statistics.median(p_delays), 3),
    }


def run(gen: str | None, stream: str | None, threads: int | None, rounds: int) -> dict[str, Any]:
    """Measure and return the figures (see the module docstring)."""
    torch = __import__("torch")
    if threads:
        torch.set_num_threads(threads)
    from qwen3guard_integrations import Qwen3Guard, Qwen3StreamGuard

    if gen is None or stream is None:
        from qwen3guard_integrations.testing import build_tiny_checkpoints

        tiny = build_tiny_checkpoints()
        gen = gen or str(tiny.gen)
        stream = stream or str(tiny.stream)
    guard = Qwen3Guard.from_pretrained(gen)
    stream_guard = Qwen3StreamGuard.from_pretrained(stream)
    try:
        res: dict[str, Any] = {
            "gen": gen,
            "stream": stream,
            "device": str(stream_guard.device),
            "threads": torch.get_num_threads(),
        }
        res.update(_overhead(guard, rounds))
        res.update(_stream_delay(stream_guard, max(2, rounds // 4)))
        return res
    finally:
        guard.close()


def main() -> None:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--gen", help="Gen checkpoint (folder or Hub id); default: tiny")
    parser.add_argument("--stream", help="Stream checkpoint; default: tiny")
    parser.add_argument("--rounds", type=int, default=20, help="passes over the prompts")
    parser.add_argument("--json", action="store_true", help="end with one JSON line")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (0: torch's)")
    args = parser.parse_args()
    res = run(args.gen, args.stream, args.threads, args.rounds)
    print(
        f"gen {res['gen']}\nstream {res['stream']}\non {res['device']} ({res['threads']} threads)"
    )
    print(
        f"(a) PromptGuard.invoke {res['prompt_guard_invoke_ms']} ms vs check_prompt "
        f"{res['check_prompt_ms']} ms -> {res['prompt_guard_overhead']}x "
        f"(+{res['prompt_guard_added_ms']} ms)"
    )
    print(
        f"(b) StreamGuard added delay per released chunk: median "
        f"{res['stream_guard_delay_ms_median']} ms, p95 {res['stream_guard_delay_ms_p95']} ms, "
        f"held {res['stream_guard_chunks_held_median']} chunks (median); plain LCEL stage "
        f"{res['passthrough_delay_ms_median']} ms; {res['chunks_per_answer']} chunks per answer"
    )
    if args.json:
        print(json.dumps(res))


if __name__ == "__main__":
    main()
