"""OpenTelemetry tracing (`PROXY_OTEL_ENABLED=true`), in process, with an in-memory exporter:
the span tree of one chat request, and nothing traced when the switch is off."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from tests.support.proxy_app import InProcessProxy, MakeProxy
from tests.support.tokens import auth

pytestmark = pytest.mark.usefixtures("sim")


@pytest.fixture(scope="module")
def exporter() -> Iterator[InMemorySpanExporter]:
    """Every span this process ends, in memory. The process's tracer provider can be set only
    once, so a provider set before (by another module on this worker) gets the exporter too."""
    provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):
        provider = TracerProvider()
        trace.set_tracer_provider(provider)
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield exporter
    exporter.shutdown()  # later spans are dropped (a provider's processors cannot be removed)


@pytest.fixture(scope="module")
async def traced(make_proxy: MakeProxy, exporter: InMemorySpanExporter) -> InProcessProxy:
    return await make_proxy(proxy_otel_enabled=True)


def children(spans: list[ReadableSpan], parent: ReadableSpan) -> list[ReadableSpan]:
    assert parent.context is not None
    return [s for s in spans if s.parent is not None
            and s.parent.span_id == parent.context.span_id]


async def test_a_chat_is_a_server_span_over_a_generation_span_over_the_engine_call(
        traced: InProcessProxy, exporter: InMemorySpanExporter) -> None:
    exporter.clear()
    response = await traced.client.post(
        "/api/llm/chat", headers=auth("tracy"),
        json={"model": "llama3.2", "stream": False, "options": {"num_predict": 4},
              "messages": [{"role": "user", "content": "hello"}]})
    assert response.status_code == 200, response.text
    usage = response.json()["usage"]
    spans = list(exporter.get_finished_spans())

    [server] = [s for s in spans if s.kind == SpanKind.SERVER]
    assert server.name == "POST /api/llm/chat"
    assert server.attributes is not None
    assert server.attributes["llm_proxy.request_id"] == response.headers["x-request-id"]
    assert server.attributes["http.route"] == "/api/llm/chat"

    [generation] = [s for s in children(spans, server) if s.name == "chat llama3.2"]
    assert generation.kind == SpanKind.CLIENT and generation.attributes is not None
    assert generation.attributes["gen_ai.operation.name"] == "chat"
    assert generation.attributes["gen_ai.request.model"] == "llama3.2"
    assert generation.attributes["gen_ai.usage.input_tokens"] == usage["prompt_tokens"]
    assert generation.attributes["gen_ai.usage.output_tokens"] == usage["completion_tokens"]
    assert usage["completion_tokens"] > 0
    assert generation.attributes["llm_proxy.time_to_first_token_ms"] > 0

    [engine_call] = children(spans, generation)
    assert engine_call.kind == SpanKind.CLIENT and engine_call.attributes is not None
    assert engine_call.name == "POST"
    # The URL under the HTTP semantic conventions' new name or their old one.
    url = engine_call.attributes.get("url.full") or engine_call.attributes.get("http.url")
    assert str(url).endswith("/api/chat")
    # All in one trace.
    assert {s.context.trace_id for s in (server, generation, engine_call)
            if s.context is not None} == {server.context.trace_id if server.context else 0}


async def test_database_statements_are_traced(traced: InProcessProxy,
                                              exporter: InMemorySpanExporter) -> None:
    exporter.clear()
    response = await traced.client.get("/api/llm/conversations", headers=auth("tracy"))
    assert response.status_code == 200
    statements = [s for s in exporter.get_finished_spans()
                  if s.attributes is not None and "db.statement" in s.attributes
                  or s.attributes is not None and "db.query.text" in s.attributes]
    assert any("conversations" in str(s.attributes) for s in statements), \
        [s.name for s in exporter.get_finished_spans()]


async def test_nothing_is_traced_when_the_switch_is_off(
        proxy: InProcessProxy, exporter: InMemorySpanExporter) -> None:
    """Not even by FastAPI's own telemetry, which would trace every app of a process whose
    tracer provider is set up (as this test module's is)."""
    exporter.clear()
    response = await proxy.client.post(
        "/api/llm/generate", headers=auth("tracy"),
        json={"model": "llama3.2", "prompt": "hi", "stream": False,
              "options": {"num_predict": 2}})
    assert response.status_code == 200
    # (The module's traced app may go on probing its engine and writing audit rows meanwhile.)
    assert [s.name for s in exporter.get_finished_spans()
            if s.kind == SpanKind.SERVER or s.name.startswith(("text_completion", "fastapi"))
            ] == []
