"""What a client can make the server hold before it is authenticated: header bytes, connections.

Each limit is tested against a real proxy process with raw sockets, because what is under test
happens in the HTTP server before any request reaches the app.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from urllib.parse import urlsplit

import httpx
from uvicorn.protocols.http.h11_impl import H11Protocol

from proxy.core.server import server_options
from proxy.core.settings import Settings
from tests.proxy.conftest import ProxyProcess
from tests.timing import scaled, wait_until


@contextmanager
def raw_connection(proxy: ProxyProcess) -> Iterator[socket.socket]:
    address = urlsplit(proxy.url)
    sock = socket.create_connection((address.hostname, address.port), timeout=scaled(10))
    try:
        yield sock
    finally:
        sock.close()


def answer_to(sock: socket.socket, data: bytes) -> bytes:
    """Send `data`; return what the server answers before it closes (b"" if it just closes).

    Fails (socket timeout) if the server neither answers nor closes: the hang under test.
    """
    try:
        sock.sendall(data)
    except (BrokenPipeError, ConnectionResetError):
        return b""  # closed while we were still sending: refused, not buffered
    received = b""
    try:
        while chunk := sock.recv(65536):
            received += chunk
            if b"\r\n\r\n" in received:
                break
    except ConnectionResetError:
        pass
    return received


def refused_or_closed(answer: bytes) -> bool:
    return answer == b"" or answer.startswith((b"HTTP/1.1 4", b"HTTP/1.0 4"))


def test_an_endless_header_is_refused_not_buffered(proxy_factory, simulator) -> None:
    proxy = proxy_factory(OLLAMA_URL=simulator.url)
    with raw_connection(proxy) as sock:
        # A megabyte of one header, never finished: the server must give up on it.
        head = b"GET /api/llm/status HTTP/1.1\r\nHost: proxy\r\nX-Padding: " + b"a" * 1_048_576
        answer = answer_to(sock, head)
    assert refused_or_closed(answer), answer[:200]
    assert httpx.get(f"{proxy.url}/api/llm/status", timeout=scaled(10)).status_code == 200


def test_the_header_cap_is_configurable(proxy_factory, simulator) -> None:
    proxy = proxy_factory(OLLAMA_URL=simulator.url, PROXY_MAX_HEADER_BYTES="4096")
    with raw_connection(proxy) as sock:
        answer = answer_to(sock, b"GET /api/llm/status HTTP/1.1\r\nHost: proxy\r\nX-Padding: "
                           + b"a" * 8192)
    assert refused_or_closed(answer), answer[:200]
    within = httpx.get(f"{proxy.url}/api/llm/status", headers={"X-Padding": "a" * 2048},
                       timeout=scaled(10))
    assert within.status_code == 200


def test_connections_beyond_the_cap_get_503(proxy_factory, simulator) -> None:
    proxy = proxy_factory(OLLAMA_URL=simulator.url, PROXY_MAX_CONNECTIONS="4")

    def status() -> httpx.Response:
        return httpx.get(f"{proxy.url}/api/llm/status", timeout=scaled(10))

    with ExitStack() as idle:
        for _ in range(4):
            idle.enter_context(raw_connection(proxy))
        refused = wait_until(lambda: (r := status()).status_code == 503 and r)
        assert "Service Unavailable" in refused.text
    # Once those connections are gone, the proxy serves again.
    wait_until(lambda: status().status_code == 200)


def test_server_options_carry_the_limits() -> None:
    settings = Settings(_env_file=None, proxy_max_header_bytes=8192,  # type: ignore[call-arg]
                        proxy_max_connections=100, proxy_keepalive_timeout_seconds=7)
    options = server_options(settings)
    # h11, not httptools: only h11 bounds what it buffers of an unfinished request head.
    assert issubclass(options["http"], H11Protocol)
    assert options["h11_max_incomplete_event_size"] == 8192
    assert options["limit_concurrency"] == 100
    assert options["timeout_keep_alive"] == 7
