"""What a client can make the server hold before it is authenticated: header bytes, connections,
and time (a request head sent slowly, "slowloris").

Each limit is tested against a real proxy process with raw sockets, because what is under test
happens in the HTTP server before any request reaches the app.
"""

from __future__ import annotations

import http.client
import json
import socket
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from urllib.parse import urlsplit

import httpx
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from proxy.core.server import server_options
from proxy.core.settings import Settings
from tests.support.proxy_process import ProxyProcess
from tests.support.timing import scaled, wait_until
from tests.support.tokens import auth


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
    # The idle connections must outlive the test's polling: no header deadline here.
    proxy = proxy_factory(OLLAMA_URL=simulator.url, PROXY_MAX_CONNECTIONS="4",
                          PROXY_HEADER_TIMEOUT_SECONDS="300")

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
                        proxy_max_connections=100, proxy_keepalive_timeout_seconds=7,
                        proxy_header_timeout_seconds=3)
    options = server_options(settings)
    # httptools, with the head cap and deadline the proxy adds to it.
    assert issubclass(options["http"], HttpToolsProtocol)
    assert options["http"].max_head_bytes == 8192
    assert options["limit_concurrency"] == 100
    assert options["timeout_keep_alive"] == 7
    assert options["http"].header_timeout == 3


# -- slowloris: uvicorn has no deadline for a request head; the proxy's protocol adds one ---


def test_a_connection_that_sends_nothing_is_closed(proxy_factory, simulator) -> None:
    proxy = proxy_factory(OLLAMA_URL=simulator.url, PROXY_HEADER_TIMEOUT_SECONDS="1")
    with raw_connection(proxy) as sock:
        assert sock.recv(1) == b""  # closed; a hang fails with a socket timeout


def test_a_head_sent_slowly_is_cut_off(proxy_factory, simulator) -> None:
    proxy = proxy_factory(OLLAMA_URL=simulator.url, PROXY_HEADER_TIMEOUT_SECONDS="1")
    with raw_connection(proxy) as sock:
        sock.sendall(b"GET /api/llm/status HTTP/1.1\r\nHost: proxy\r\n")
        sock.setblocking(False)
        answers: list[bytes] = []

        def drip_one_line_then_check_closed() -> bool:
            try:
                sock.send(b"X-Drip: 1\r\n")
                answers.append(sock.recv(4096))
            except BlockingIOError:
                return False  # still open, still waiting for the rest of the head
            except (BrokenPipeError, ConnectionResetError):
                return True
            return True

        # A header line every 0.2 s keeps any per-read timeout happy; only a deadline for the
        # whole head ends it.
        wait_until(drip_one_line_then_check_closed, timeout=15, interval=0.2)
    assert answers in ([], [b""]), answers


def test_the_deadline_is_per_request_head_not_per_connection(proxy_factory, simulator) -> None:
    proxy = proxy_factory(OLLAMA_URL=simulator.url, PROXY_HEADER_TIMEOUT_SECONDS="1")
    address = urlsplit(proxy.url)
    connection = http.client.HTTPConnection(address.hostname or "", address.port,
                                            timeout=scaled(10))
    started = time.monotonic()
    ports: set[int] = set()

    def one_more_request() -> bool:
        connection.request("GET", "/api/llm/status")
        response = connection.getresponse()
        assert response.status == 200
        response.read()
        assert connection.sock is not None
        ports.add(connection.sock.getsockname()[1])
        return time.monotonic() - started > 3  # three header deadlines have come and gone

    try:
        wait_until(one_more_request, timeout=20, interval=0.3)
    finally:
        connection.close()
    assert len(ports) == 1, "the keep-alive connection was closed between requests"


def test_a_stream_longer_than_the_deadline_is_not_cut(proxy_factory, sim) -> None:
    proxy = proxy_factory(OLLAMA_URL=sim.url, PROXY_HEADER_TIMEOUT_SECONDS="1")
    sim.configure(tokens_per_second=10)
    with httpx.stream("POST", f"{proxy.url}/api/llm/generate", headers=auth(),
                      json={"model": "llama3.2", "prompt": "a long answer, please"},
                      timeout=scaled(30)) as response:
        assert response.status_code == 200
        lines = [json.loads(line) for line in response.iter_lines() if line]
    done = lines[-1]
    assert done["done"] is True, done
    assert done["usage"]["completion_tokens"] == len(lines) - 1
    # The stream outlasted the header deadline (a lower bound: 10 tokens a second).
    assert done["timings"]["total_ms"] > 1500
