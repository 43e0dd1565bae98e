"""OpenTelemetry spans for guard checks, when ``opentelemetry-api`` is installed (extra ``otel``).

Without it every function here is a cheap no-op. With it, `span` opens a span on the global
tracer (``qwen3guard_integrations``); `inject` writes the current trace context into a carrier
(HTTP headers, the Stream ``open`` frame) and `extract` reads it back on the server, so a
server's ``qwen3guard.check`` / ``qwen3guard.stream`` spans are children of the client's.

Span attributes (`verdict_attributes`): ``qwen3guard.level``, ``qwen3guard.categories``,
``qwen3guard.blocked``, ``qwen3guard.degraded``, ``qwen3guard.latency_ms``, ``qwen3guard.model``,
``qwen3guard.backend``, ``qwen3guard.role`` and, for streams, ``qwen3guard.token_index``.
"""

from __future__ import annotations

import contextlib
import importlib
from collections.abc import Iterator, Mapping
from typing import Any

from ...core.verdict import Verdict

__all__ = [
    "CHECK_SPAN",
    "STREAM_SPAN",
    "enabled",
    "extract",
    "inject",
    "span",
    "verdict_attributes",
]

CHECK_SPAN = "qwen3guard.check"
STREAM_SPAN = "qwen3guard.stream"

_otel: Any = None
_tried = False


def _api() -> Any:
    """The ``opentelemetry`` modules (``trace``, ``propagate``), or None when not installed."""
    global _otel, _tried
    if not _tried:
        _tried = True
        try:
            trace = importlib.import_module("opentelemetry.trace")
            propagate = importlib.import_module("opentelemetry.propagate")
            _otel = (trace, propagate)
        except ImportError:
            _otel = None
    return _otel


def enabled() -> bool:
    """True when ``opentelemetry-api`` is importable."""
    return _api() is not None


class _NoSpan:
    def set_attributes(self, attributes: Mapping[str, Any]) -> None:
        """Nothing to record."""

    def set_attribute(self, key: str, value: Any) -> None:
        """Nothing to record."""

    def record_exception(self, exc: BaseException) -> None:
        """Nothing to record."""


@contextlib.contextmanager
def span(
    name: str,
    attributes: Mapping[str, Any] | None = None,
    *,
    kind: str = "internal",
    parent: Mapping[str, str] | None = None,
) -> Iterator[Any]:
    """A span named ``name`` (``kind``: internal, client or server); ``parent``: a carrier the
    trace context is extracted from (the server side of a call)."""
    api = _api()
    if api is None:
        yield _NoSpan()
        return
    trace, propagate = api
    ctx = propagate.extract(dict(parent)) if parent else None
    span_kind = getattr(trace.SpanKind, kind.upper(), trace.SpanKind.INTERNAL)
    tracer = trace.get_tracer("qwen3guard_integrations")
    with tracer.start_as_current_span(
        name, context=ctx, kind=span_kind, attributes=dict(attributes or {})
    ) as current:
        yield current


def inject(carrier: dict[str, str] | None = None) -> dict[str, str]:
    """The current trace context written into ``carrier`` (a new dict by default)."""
    carrier = {} if carrier is None else carrier
    api = _api()
    if api is not None:
        api[1].inject(carrier)
    return carrier


def extract(carrier: Mapping[str, str]) -> Any:
    """The trace context in ``carrier`` (None without OpenTelemetry)."""
    api = _api()
    return None if api is None else api[1].extract(dict(carrier))


def verdict_attributes(verdict: Verdict, *, blocked: bool) -> dict[str, Any]:
    """The span attributes of one decision."""
    attrs: dict[str, Any] = {
        "qwen3guard.level": verdict.level.value,
        "qwen3guard.categories": [c.value for c in verdict.categories],
        "qwen3guard.blocked": blocked,
        "qwen3guard.degraded": verdict.degraded,
        "qwen3guard.role": verdict.role.value,
    }
    if verdict.latency_ms is not None:
        attrs["qwen3guard.latency_ms"] = float(verdict.latency_ms)
    if verdict.model is not None:
        attrs["qwen3guard.model"] = verdict.model
    if verdict.backend is not None:
        attrs["qwen3guard.backend"] = verdict.backend
    if verdict.token_index is not None:
        attrs["qwen3guard.token_index"] = verdict.token_index
    return attrs
