"""With `PROXY_OTEL_ENABLED=true` a real proxy sends its spans to the OTLP endpoint that
OpenTelemetry's own variables name, as protobuf over HTTP: a collector of the test's own
receives them. (The span tree itself is checked in process: tests/proxy/fast/test_tracing.py.)
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from tests.support.proxy_process import ProxyProcess
from tests.support.timing import scaled, wait_until
from tests.support.tokens import auth


class Collector(ThreadingHTTPServer):
    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), CollectorHandler)
        self.exports: list[ExportTraceServiceRequest] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def span_names(self) -> set[str]:
        return {span.name for export in self.exports for resource in export.resource_spans
                for scope in resource.scope_spans for span in scope.spans}


class CollectorHandler(BaseHTTPRequestHandler):
    server: Collector

    def do_POST(self) -> None:  # noqa: N802 - the name http.server calls
        body = self.rfile.read(int(self.headers.get("content-length", "0")))
        if self.path == "/v1/traces":
            self.server.exports.append(ExportTraceServiceRequest.FromString(body))
        self.send_response(200)
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, *_: object) -> None:
        pass


@pytest.fixture(scope="module")
def collector() -> Iterator[Collector]:
    server = Collector()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def test_spans_reach_the_otlp_endpoint(collector: Collector, proxy_factory, simulator) -> None:
    # The collector first: it is stopped after the proxy, which sends its last spans at exit.
    proxy: ProxyProcess = proxy_factory(
        OLLAMA_URL=simulator.url, PROXY_OTEL_ENABLED="true",
        OTEL_EXPORTER_OTLP_ENDPOINT=collector.url, OTEL_BSP_SCHEDULE_DELAY="100")
    response = httpx.post(f"{proxy.url}/api/llm/chat", headers=auth("otto"),
                          json={"model": "llama3.2", "stream": False,
                                "messages": [{"role": "user", "content": "hi"}]},
                          timeout=scaled(30))
    assert response.status_code == 200, response.text
    wait_until(lambda: {"POST /api/llm/chat", "chat llama3.2"} <= collector.span_names(),
               timeout=scaled(10))
    resource = collector.exports[0].resource_spans[0].resource
    attributes = {a.key: a.value.string_value for a in resource.attributes}
    assert attributes["service.name"] == "llm-proxy"
