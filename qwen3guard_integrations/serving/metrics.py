"""The guard server's metrics, rendered in the Prometheus text format (no client library).

Counters: ``qwen3guard_checks_total{kind,role,level}`` (every Gen check and every Stream prompt
verdict), ``qwen3guard_blocks_total{kind,role,level,category}``, ``qwen3guard_stream_tokens_total``
(response tokens moderated), ``qwen3guard_stream_sessions_total`` (opened),
``qwen3guard_errors_total{type}`` (typed errors answered). Gauges: ``qwen3guard_live_sessions``,
``qwen3guard_queue_depth`` (model calls waiting or running). Histograms:
``qwen3guard_step_latency_seconds{op}`` (Stream open / feed / finish / peek) and
``qwen3guard_check_latency_seconds`` (Gen).
"""

from __future__ import annotations

import threading
from collections import defaultdict
from collections.abc import Iterable

from ..core.verdict import Verdict

__all__ = ["LATENCY_BUCKETS", "Metrics"]

#: Histogram bucket bounds in seconds.
LATENCY_BUCKETS: tuple[float, ...] = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)

Labels = tuple[tuple[str, str], ...]


class _Histogram:
    def __init__(self) -> None:
        self.counts = [0] * len(LATENCY_BUCKETS)
        self.total = 0
        self.sum = 0.0

    def observe(self, seconds: float) -> None:
        self.total += 1
        self.sum += seconds
        for i, bound in enumerate(LATENCY_BUCKETS):
            if seconds <= bound:
                self.counts[i] += 1


class Metrics:
    """Thread-safe counters, gauges and histograms of one server process."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counters: dict[str, dict[Labels, float]] = defaultdict(lambda: defaultdict(float))
        self._gauges: dict[str, float] = defaultdict(float)
        self._hists: dict[str, dict[Labels, _Histogram]] = defaultdict(dict)

    def inc(self, name: str, value: float = 1.0, **labels: str) -> None:
        """Add ``value`` to the counter ``name`` with ``labels``."""
        key = tuple(sorted(labels.items()))
        with self._lock:
            self._counters[name][key] += value

    def gauge_add(self, name: str, delta: float) -> None:
        """Move the gauge ``name`` by ``delta``."""
        with self._lock:
            self._gauges[name] += delta

    def gauge(self, name: str) -> float:
        """The gauge's current value."""
        with self._lock:
            return self._gauges[name]

    def observe(self, name: str, seconds: float, **labels: str) -> None:
        """Record one latency in the histogram ``name``."""
        key = tuple(sorted(labels.items()))
        with self._lock:
            hist = self._hists[name].get(key)
            if hist is None:
                hist = self._hists[name][key] = _Histogram()
            hist.observe(seconds)

    def counter(self, name: str, **labels: str) -> float:
        """The counter's value for exactly ``labels`` (0 when never counted)."""
        with self._lock:
            return self._counters[name].get(tuple(sorted(labels.items())), 0.0)

    def record_verdict(self, kind: str, verdict: Verdict, *, blocked: bool) -> None:
        """Count one decision: a check, and a block by level and category when it blocks."""
        role, level = verdict.role.value, verdict.level.value
        if verdict.role.value == "prompt" or kind == "gen":
            self.inc("qwen3guard_checks_total", kind=kind, role=role, level=level)
        if blocked:
            for cat in verdict.categories or ():
                self.inc(
                    "qwen3guard_blocks_total", kind=kind, role=role, level=level, category=cat.value
                )
            if not verdict.categories:
                self.inc("qwen3guard_blocks_total", kind=kind, role=role, level=level, category="")

    def render(self) -> str:
        """Everything in the Prometheus text exposition format (version 0.0.4)."""
        lines: list[str] = []
        with self._lock:
            for name in sorted(self._counters):
                lines.append(f"# TYPE {name} counter")
                for labels, value in sorted(self._counters[name].items()):
                    lines.append(f"{name}{_fmt(labels)} {_num(value)}")
            for name in sorted(self._gauges):
                lines.append(f"# TYPE {name} gauge")
                lines.append(f"{name} {_num(self._gauges[name])}")
            for name in sorted(self._hists):
                lines.append(f"# TYPE {name} histogram")
                for labels, hist in sorted(self._hists[name].items()):
                    for bound, count in zip(LATENCY_BUCKETS, hist.counts):
                        le = (*labels, ("le", repr(bound)))
                        lines.append(f"{name}_bucket{_fmt(le)} {count}")
                    lines.append(f"{name}_bucket{_fmt((*labels, ('le', '+Inf')))} {hist.total}")
                    lines.append(f"{name}_sum{_fmt(labels)} {hist.sum!r}")
                    lines.append(f"{name}_count{_fmt(labels)} {hist.total}")
        return "\n".join(lines) + "\n"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _fmt(labels: Iterable[tuple[str, str]]) -> str:
    items = list(labels)
    if not items:
        return ""
    return "{" + ",".join(f'{k}="{_escape(v)}"' for k, v in items) + "}"


def _num(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(value)
