"""The `StreamEngine`'s counters and its `stats` view (plain bookkeeping under the engine's lock)."""

from __future__ import annotations

from collections import deque
from typing import Any

__all__ = ["EngineCounters"]


class EngineCounters:
    """Steps, batch sizes, step latencies and session counts of one engine."""

    def __init__(self, window: int = 2048) -> None:
        self.batches: deque[int] = deque(maxlen=window)
        self.latency: deque[float] = deque(maxlen=window)
        self.counts = dict.fromkeys(("steps", "evicted", "failed", "opened", "chunks", "mixed"), 0)

    def step(self, rows: int, chunks: int, elapsed_s: float) -> None:
        """Record one step of ``rows`` sessions, ``chunks`` of them prefill chunks."""
        self.counts["steps"] += 1
        self.counts["chunks"] += chunks
        self.counts["mixed"] += 0 < chunks < rows
        self.batches.append(rows)
        self.latency.append(elapsed_s)

    def view(self, live: list[Any], queued: int) -> dict[str, Any]:
        """The figures `StreamEngine.stats` returns (latencies in ms), less the engine's limits."""
        lat = sorted(self.latency)
        sizes = list(self.batches)
        counts = self.counts

        def pct(q: float) -> float | None:
            return round(lat[min(len(lat) - 1, int(q * len(lat)))] * 1000, 4) if lat else None

        return {
            "live_sessions": len(live),
            "cached_tokens": sum(h.length for h in live),
            "queued_jobs": queued,
            "steps": counts["steps"],
            "sessions_opened": counts["opened"],
            "sessions_evicted": counts["evicted"],
            "sessions_failed": counts["failed"],
            "prefill_chunks": counts["chunks"],
            "mixed_steps": counts["mixed"],
            "batch_size_mean": round(sum(sizes) / len(sizes), 3) if sizes else None,
            "batch_size_max": max(sizes) if sizes else None,
            "step_ms_p50": pct(0.5),
            "step_ms_p90": pct(0.9),
            "step_ms_p99": pct(0.99),
        }
