"""Every upstream failure maps to its documented answer: through httpx's MockTransport for each
branch of the mapping of httpx's errors, and a table for each branch of aiohttp's (the
generations' client, proxy/upstream/http.py); the failures the simulator can produce are sent
through the whole app, and so through aiohttp, in fast/test_errors.py."""

from __future__ import annotations

import asyncio
import json

import aiohttp
import httpx
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from proxy.core import errors
from proxy.core.errors import (
    ModelNotFound,
    UpstreamError,
    UpstreamFailed,
    UpstreamRejected,
    UpstreamTimeout,
    UpstreamUnavailable,
    error_from_upstream_response,
    map_relay_error,
    map_transport_error,
)
from proxy.core.settings import Settings
from proxy.upstream.ollama import OllamaClient

# --- the mapping function, branch by branch ---------------------------------------------------

def _client(handler) -> OllamaClient:
    return OllamaClient(Settings(ollama_url="http://ollama.test"),
                        transport=httpx.MockTransport(handler))


def _raise(exc: Exception):
    def handler(request: httpx.Request) -> httpx.Response:
        raise exc
    return handler


TRANSPORT_CASES = [
    (httpx.ConnectError("refused"), UpstreamUnavailable, 503),
    (httpx.ConnectTimeout("slow"), UpstreamTimeout, 504),
    (httpx.ReadTimeout("slow"), UpstreamTimeout, 504),
    (httpx.WriteTimeout("slow"), UpstreamTimeout, 504),
    (httpx.PoolTimeout("full"), UpstreamTimeout, 504),
    (httpx.RemoteProtocolError("eof"), UpstreamFailed, 502),
    (httpx.ReadError("reset"), UpstreamFailed, 502),
    (httpx.WriteError("reset"), UpstreamFailed, 502),
    (httpx.UnsupportedProtocol("gopher"), UpstreamFailed, 502),
]


@pytest.mark.parametrize(("exc", "expected", "status"), TRANSPORT_CASES)
async def test_transport_errors_map(exc: Exception, expected: type[UpstreamError],
                                    status: int) -> None:
    client = _client(_raise(exc))
    with pytest.raises(expected) as caught:
        await client.request_json("GET", "/api/tags")
    assert caught.value.status_code == status
    await client.aclose()


_KEY = aiohttp.client_reqrep.ConnectionKey("ollama.test", 11434, False, True, None, None, None)
RELAY_CASES = [
    (aiohttp.ClientConnectorError(_KEY, ConnectionRefusedError(111, "refused")),
     UpstreamUnavailable, 503),
    (aiohttp.ConnectionTimeoutError("slow"), UpstreamTimeout, 504),
    (aiohttp.SocketTimeoutError("slow"), UpstreamTimeout, 504),
    (aiohttp.ServerDisconnectedError(), UpstreamFailed, 502),
    (aiohttp.ClientPayloadError("cut short"), UpstreamFailed, 502),
    (aiohttp.ClientOSError(104, "reset"), UpstreamFailed, 502),
    (aiohttp.InvalidURL("gopher://x"), UpstreamFailed, 502),
]


@pytest.mark.parametrize(("exc", "expected", "status"), RELAY_CASES)
def test_relay_errors_map(exc: aiohttp.ClientError, expected: type[UpstreamError],
                          status: int) -> None:
    mapped = map_relay_error(exc)
    assert type(mapped) is expected
    assert mapped.status_code == status


RESPONSE_CASES = [
    (404, {"error": "model 'm' not found"}, "m", ModelNotFound, 404),
    (404, {"error": "not here"}, None, UpstreamRejected, 404),
    (400, {"error": "model is required"}, "m", UpstreamRejected, 400),
    (499, {"error": "request canceled"}, "m", UpstreamRejected, 499),
    (503, {"error": "server busy"}, "m", UpstreamUnavailable, 503),
    (500, {"error": "boom"}, "m", UpstreamFailed, 502),
    (502, "<html>bad gateway</html>", "m", UpstreamFailed, 502),
]


@pytest.mark.parametrize(("status", "body", "model", "expected", "mapped"), RESPONSE_CASES)
async def test_upstream_statuses_map(status: int, body: object, model: str | None,
                                     expected: type[UpstreamError], mapped: int) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if isinstance(body, dict):
            return httpx.Response(status, json=body)
        return httpx.Response(status, text=str(body))

    client = _client(handler)
    with pytest.raises(expected) as caught:
        await client.request_json("POST", "/api/show", {"model": model}, model=model)
    assert caught.value.status_code == mapped
    if isinstance(body, dict) and expected is not ModelNotFound:
        assert body["error"] in caught.value.message
    await client.aclose()


async def test_a_line_that_is_not_json_is_502() -> None:
    async def not_json(request: web.Request) -> web.Response:
        return web.Response(text='{"response":"a"}\nnot json\n')

    app = web.Application()
    app.router.add_post("/api/generate", not_json)
    async with TestServer(app, host="127.0.0.1") as server:
        client = OllamaClient(Settings(ollama_url=str(server.make_url(""))))
        with pytest.raises(UpstreamFailed, match="not JSON"):
            async for _ in client.stream_lines("/api/generate", {}, model="m"):
                pass
        await client.aclose()


def test_every_upstream_error_class_is_produced_by_the_mapping() -> None:
    produced = {type(map_transport_error(exc)) for exc, _, _ in TRANSPORT_CASES}
    produced |= {type(map_relay_error(exc)) for exc, _, _ in RELAY_CASES}
    for status, body, model, _, _ in RESPONSE_CASES:
        produced.add(type(error_from_upstream_response(status, json.dumps(body).encode(), model)))
    declared = {cls for cls in vars(errors).values()
                if isinstance(cls, type) and issubclass(cls, UpstreamError)
                and cls is not UpstreamError}
    assert declared == produced


async def test_an_engine_that_closes_each_connection_after_answering_loses_no_request() -> None:
    """llama-server closes its end after a streamed answer although its headers say keep-alive:
    the next request, sent at once on that connection, must go out again on a new one."""
    final = json.dumps({"response": "", "done": True, "eval_count": 1}).encode() + b"\n"

    async def answer_then_close(reader: asyncio.StreamReader, writer: asyncio.StreamWriter
                                ) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                      if line.lower().startswith(b"content-length:"))
        await reader.readexactly(length)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/x-ndjson\r\n"
                     b"Keep-Alive: timeout=5, max=100\r\n"
                     b"Content-Length: %d\r\n\r\n%s" % (len(final), final))
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(answer_then_close, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    client = OllamaClient(Settings(ollama_url=f"http://127.0.0.1:{port}"))
    try:
        for _ in range(6):
            objects = [obj async for obj in client.stream_lines("/api/generate", {}, model="m")]
            assert objects[-1]["done"] is True
    finally:
        await client.aclose()
        server.close()
