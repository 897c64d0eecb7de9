"""OpenTelemetry tracing, off unless `PROXY_OTEL_ENABLED=true`.

When it is on, each request is a server span (the FastAPI instrumentation), each generation a span
of its own with the model and the token counts (`generation_span`, GenAI semantic conventions),
each call to an engine an HTTP client span (the httpx instrumentation on the engines' clients, the
aiohttp one on the sessions generations go through) and each database statement a span (the
SQLAlchemy instrumentation, on the app's engine). Spans go to an OTLP collector over HTTP,
configured by OpenTelemetry's own variables (`OTEL_EXPORTER_OTLP_ENDPOINT`, default
http://localhost:4318, `…_HEADERS`, `OTEL_SERVICE_NAME`, default llm-proxy, `OTEL_TRACES_SAMPLER`,
…). A tracer provider that the process already has (one set up by `opentelemetry-instrument`, or by
a test) is used as it is.

An explicit switch rather than the presence of `OTEL_EXPORTER_OTLP_ENDPOINT`: that variable is
often set for a whole host or pod, and would then turn on export from the proxy without anyone
deciding it. When the switch is off nothing is instrumented at all, so tracing costs nothing;
`generation_span` then hands out OpenTelemetry's non-recording span.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import httpx
from opentelemetry import trace
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import Span, SpanKind
from sqlalchemy.ext.asyncio import AsyncEngine

tracer = trace.get_tracer("proxy")


def start_tracing(enabled: bool) -> None:
    """Install the OTLP exporter as the process's tracer provider, unless tracing is off or
    the process already has an SDK provider."""
    if not enabled or isinstance(trace.get_tracer_provider(), TracerProvider):
        return
    # Imported here: the exporter pulls in protobuf, which a proxy without tracing never needs.
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    # OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES, when set, win over this default.
    provider = TracerProvider(resource=Resource.create({SERVICE_NAME: "llm-proxy"}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)


def trace_app(app: Any, enabled: bool) -> None:
    """A server span per request (WebSockets included); the probes and the scrape are left
    out, as they are polled every few seconds."""
    if enabled:
        from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

        FastAPIInstrumentor.instrument_app(app, excluded_urls="livez,readyz,metrics")


def trace_http_client(client: httpx.AsyncClient, enabled: bool) -> None:
    """A client span per request this engine client sends."""
    if enabled:
        from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor

        HTTPXClientInstrumentor.instrument_client(client)


def relay_trace_configs(enabled: bool) -> list[Any]:
    """The aiohttp session's trace configs: a client span per generation sent to an engine
    (generations go through aiohttp, upstream/http.py)."""
    if not enabled:
        return []
    from opentelemetry.instrumentation.aiohttp_client import create_trace_config

    return [create_trace_config()]


def trace_database(engine: AsyncEngine, enabled: bool) -> None:
    """A span per statement on this engine. The instrumentation's own `EngineTracer`, as
    `SQLAlchemyInstrumentor().instrument(engine=…)` uses it, but per engine: the instrumentor is
    a process-wide singleton that also patches `create_engine` everywhere."""
    if not enabled:
        return
    from opentelemetry.instrumentation.sqlalchemy.engine import EngineTracer
    from opentelemetry.instrumentation.sqlalchemy.version import __version__
    from opentelemetry.metrics import get_meter
    from opentelemetry.semconv.metrics import MetricInstruments

    name = "opentelemetry.instrumentation.sqlalchemy"
    usage = get_meter(name, __version__).create_up_down_counter(
        MetricInstruments.DB_CLIENT_CONNECTIONS_USAGE, unit="connections")
    # The instrumentation's classes carry no type hints.
    EngineTracer(trace.get_tracer(name, __version__), engine.sync_engine,  # type: ignore[no-untyped-call]
                 usage)


def generation_span(kind: str, model: str) -> Span:
    """The span of one generation sent to an engine, named as the GenAI conventions name it
    (`chat llama3.2`); `end_generation` adds what the engine reported.

    Recorded only inside a traced request: with the switch off no request span exists, so
    nothing is recorded even in a process whose tracer provider another part has set up.
    """
    if not trace.get_current_span().is_recording():
        return trace.INVALID_SPAN
    operation = "chat" if kind == "chat" else "text_completion"
    return tracer.start_span(f"{operation} {model}", kind=SpanKind.CLIENT, attributes={
        "gen_ai.operation.name": operation,
        "gen_ai.request.model": model,
    })


def end_generation(span: Span, final: Mapping[str, Any], first_token_ms: float | None) -> None:
    """End the generation's span with the engine's final counts on it."""
    attributes: dict[str, Any] = {}
    for key, name in (("prompt_eval_count", "gen_ai.usage.input_tokens"),
                      ("eval_count", "gen_ai.usage.output_tokens")):
        if isinstance(final.get(key), int):
            attributes[name] = final[key]
    if isinstance(final.get("model"), str):
        attributes["gen_ai.response.model"] = final["model"]
    if isinstance(final.get("done_reason"), str):
        attributes["gen_ai.response.finish_reasons"] = [final["done_reason"]]
    if first_token_ms is not None:
        attributes["llm_proxy.time_to_first_token_ms"] = round(first_token_ms, 3)
    span.set_attributes(attributes)
    span.end()
