"""OpenTelemetry spans of remote checks and stream decisions, client and server, recorded with an
in-memory exporter (the server runs under uvicorn in a thread of this process)."""

from __future__ import annotations

import pytest

from qwen3guard_integrations import Qwen3Guard, Qwen3StreamGuard
from tests.support.serving_support import ThreadServer

pytest.importorskip("torch")
pytest.importorskip("uvicorn")
pytest.importorskip("opentelemetry.sdk")

from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import (
    InMemorySpanExporter,
)


@pytest.fixture(scope="module")
def exporter() -> InMemorySpanExporter:
    exp = InMemorySpanExporter()
    provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):
        provider = TracerProvider()
        trace.set_tracer_provider(provider)
        provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):
        pytest.skip("another tracer provider is installed in this process")
    provider.add_span_processor(SimpleSpanProcessor(exp))
    return exp


@pytest.fixture(scope="module")
def server(tiny):  # type: ignore[no-untyped-def]
    from qwen3guard_integrations.serving import create_app

    gen = Qwen3Guard.from_pretrained(tiny.gen, device="cpu")
    stream = Qwen3StreamGuard.from_pretrained(tiny.stream, device="cpu")
    srv = ThreadServer(create_app(gen, stream))
    yield srv
    srv.stop()
    gen.close()


def _by(spans, name: str, kind) -> list:  # type: ignore[no-untyped-def]
    return [s for s in spans if s.name == name and s.kind == kind]


def test_check_spans_carry_the_verdict_and_the_client_trace(server, exporter) -> None:  # type: ignore[no-untyped-def]
    guard = Qwen3Guard.from_server(server.url)
    exporter.clear()
    tracer = trace.get_tracer("test")
    with tracer.start_as_current_span("app.request") as root:
        verdict = guard.check_prompt("How can I make a bomb?")
    spans = exporter.get_finished_spans()
    (client,) = _by(spans, "qwen3guard.check", trace.SpanKind.CLIENT)
    (srv,) = _by(spans, "qwen3guard.check", trace.SpanKind.SERVER)
    trace_id = root.get_span_context().trace_id
    assert client.context.trace_id == srv.context.trace_id == trace_id
    assert srv.parent is not None and srv.parent.span_id == client.context.span_id
    a = srv.attributes
    assert a["qwen3guard.level"] == verdict.level.value == "Unsafe"
    assert list(a["qwen3guard.categories"]) == [c.value for c in verdict.categories]
    assert a["qwen3guard.blocked"] is True and a["qwen3guard.degraded"] is False
    assert a["qwen3guard.model"] == verdict.model and a["qwen3guard.backend"] == "transformers"
    assert a["qwen3guard.latency_ms"] > 0
    assert client.attributes["qwen3guard.level"] == "Unsafe"
    guard.close()


def test_stream_spans_name_the_decision_and_its_token(server, exporter) -> None:  # type: ignore[no-untyped-def]
    guard = Qwen3StreamGuard.from_server(server.url)
    exporter.clear()
    with guard.session("Can you help me?") as s:
        text = "Sure! Here is what you asked for: build the bomb, step by step."
        for i in range(0, len(text), 5):
            s.feed(text[i : i + 5])
        s.finish()
        verdict = s.verdict
    assert verdict is not None and s.blocked
    spans = exporter.get_finished_spans()
    server_spans = _by(spans, "qwen3guard.stream", trace.SpanKind.SERVER)
    client_spans = _by(spans, "qwen3guard.stream", trace.SpanKind.CLIENT)
    assert {sp.attributes["qwen3guard.op"] for sp in server_spans} >= {"open", "feed", "finish"}
    assert len(client_spans) == len(server_spans)
    opened = next(sp for sp in server_spans if sp.attributes["qwen3guard.op"] == "open")
    assert opened.attributes["qwen3guard.role"] == "prompt"
    tripped = [sp for sp in server_spans if sp.attributes.get("qwen3guard.role") == "response"]
    assert tripped, "a span carries the response decision"
    last = tripped[-1].attributes
    assert last["qwen3guard.level"] == verdict.level.value
    assert last["qwen3guard.token_index"] == verdict.token_index
    assert last["qwen3guard.blocked"] is True
    assert list(last["qwen3guard.categories"]) == [c.value for c in verdict.categories]
    for sp in server_spans:  # every server span continues the client's trace
        parent = next(c for c in client_spans if c.context.span_id == sp.parent.span_id)
        assert parent.context.trace_id == sp.context.trace_id
