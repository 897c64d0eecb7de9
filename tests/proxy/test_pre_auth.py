"""No body is read for a caller who has not authenticated, and no body may take forever.

Raw sockets against a real proxy, because the behaviour is about bytes that are never sent:
- a request declaring a large body, without a valid token, is answered 401 before a single byte
  of that body is sent (and the connection is closed, so nothing waits for it);
- an authenticated upload that stalls (or trickles) is answered 408 once
  `PROXY_BODY_READ_TIMEOUT_SECONDS` have passed since the body started.
Both refusals are audited and counted.
"""

from __future__ import annotations

import json
import socket
import uuid
from collections.abc import Iterator
from contextlib import closing, suppress
from typing import Any
from urllib.parse import urlsplit

import pytest

from tests.support.proxy_process import ProxyProcess, audit_entries, counted
from tests.support.timing import scaled, wait_until
from tests.support.tokens import make_token

pytestmark = pytest.mark.usefixtures("sim")

BODY_READ_TIMEOUT = 1.0
# Under the default 1 MiB cap: a large body the proxy would otherwise accept and buffer.
DECLARED = 1_000_000


@pytest.fixture(scope="module")
def proxy(proxy_factory, simulator) -> ProxyProcess:
    return proxy_factory(OLLAMA_URL=simulator.url,
                         PROXY_BODY_READ_TIMEOUT_SECONDS=str(BODY_READ_TIMEOUT))


@pytest.fixture
def connection(proxy: ProxyProcess) -> Iterator[socket.socket]:
    address = urlsplit(proxy.url)
    sock = socket.create_connection((address.hostname, address.port), timeout=scaled(10))
    with closing(sock):
        yield sock


def head(path: str, token: str | None, *extra: str, method: str = "POST") -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: proxy.test", "Content-Type: application/json",
             *extra]
    if token is not None:
        lines.append(f"Authorization: Bearer {token}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


class Answer:
    def __init__(self, raw: bytes) -> None:
        header, _, self.body = raw.partition(b"\r\n\r\n")
        status_line, *header_lines = header.decode("latin-1").split("\r\n")
        self.status = int(status_line.split()[1])
        self.headers = {k.strip().lower(): v.strip()
                        for k, v in (line.split(":", 1) for line in header_lines)}

    def json(self) -> Any:
        return json.loads(self.body)


def read_answer(sock: socket.socket, waiting_for: str) -> Answer:
    """Read one whole response (a Content-Length body); fail clearly if none comes in time."""
    raw = b""
    try:
        while b"\r\n\r\n" not in raw:
            chunk = sock.recv(65536)
            if not chunk:
                break
            raw += chunk
    except TimeoutError:
        raise AssertionError(f"no answer within {sock.gettimeout():g} s: {waiting_for}") from None
    assert raw, f"connection closed without an answer: {waiting_for}"
    answer = Answer(raw)
    length = int(answer.headers.get("content-length", "0"))
    while len(answer.body) < length:
        chunk = sock.recv(65536)
        assert chunk, "connection closed mid-answer"
        answer.body += chunk
    return answer


def closed_by_server(sock: socket.socket) -> bool:
    try:
        return sock.recv(1) == b""
    except (TimeoutError, ConnectionResetError):
        return False


@pytest.mark.parametrize(("token", "reason"), [
    (None, "missing_token"),
    ("expired", "expired"),
], ids=["no-token", "expired-token"])
def test_unauthenticated_large_body_is_401_before_the_body_is_sent(
    proxy: ProxyProcess, connection: socket.socket, token: str | None, reason: str
) -> None:
    sent_token = make_token("mallory", ttl=-300) if token == "expired" else None
    failures = counted(proxy, "llm_proxy_auth_failures_total", reason=reason)
    correlation = f"pre-auth-{uuid.uuid4().hex[:12]}"
    connection.sendall(head("/api/llm/generate", sent_token, f"Content-Length: {DECLARED}",
                            f"X-Request-ID: {correlation}"))
    # Not one byte of the declared body is sent.
    answer = read_answer(connection, "the proxy is waiting for the body of an "
                                     "unauthenticated request")
    assert answer.status == 401
    assert answer.json()["reason"] == reason
    assert answer.headers["www-authenticate"].startswith("Bearer")
    # The connection is closed: nothing is left waiting for the million bytes.
    assert closed_by_server(connection)
    assert counted(proxy, "llm_proxy_auth_failures_total", reason=reason) == failures + 1
    [row] = wait_until(lambda: [e for e in audit_entries(proxy, status=401)
                                if e["correlation_id"] == correlation])
    assert row["id"] == answer.headers["x-request-id"]
    assert row["endpoint"] == "/api/llm/generate"
    assert row["user"] is None
    assert reason in row["error"]


def test_every_route_that_needs_a_token_refuses_before_reading(proxy: ProxyProcess) -> None:
    address = urlsplit(proxy.url)
    for method, path in (("POST", "/api/llm/chat"), ("POST", "/api/admin/templates"),
                         ("POST", "/api/admin/models/pull"),
                         ("PUT", "/api/admin/templates/greeting")):
        with closing(socket.create_connection((address.hostname, address.port),
                                              timeout=scaled(10))) as sock:
            sock.sendall(head(path, None, f"Content-Length: {DECLARED}", method=method))
            answer = read_answer(sock, f"{path} waits for an unauthenticated body")
            assert (path, answer.status) == (path, 401)
            assert closed_by_server(sock)


@pytest.mark.parametrize("framing", ["content-length", "chunked"])
def test_a_stalled_authenticated_upload_gets_408(proxy: ProxyProcess, connection: socket.socket,
                                                  framing: str) -> None:
    user = f"staller-{uuid.uuid4().hex[:8]}"
    before = counted(proxy, "llm_proxy_requests_total", status="408")
    start = b'{"model": "llama3.2", "prompt": "'
    if framing == "chunked":
        connection.sendall(head("/api/llm/generate", make_token(user),
                                "Transfer-Encoding: chunked")
                           + f"{len(start):x}\r\n".encode() + start + b"\r\n")
    else:
        connection.sendall(head("/api/llm/generate", make_token(user), "Content-Length: 1000")
                           + start)
    # ...and nothing more: the proxy must give up on its own.
    connection.settimeout(scaled(BODY_READ_TIMEOUT + 10))
    answer = read_answer(connection, "a stalled upload is held open with no read timeout")
    assert answer.status == 408
    assert "PROXY_BODY_READ_TIMEOUT_SECONDS" in answer.json()["error"]
    assert closed_by_server(connection)
    assert counted(proxy, "llm_proxy_requests_total", status="408") == before + 1
    [row] = wait_until(lambda: [e for e in audit_entries(proxy, status=408) if e["user"] == user])
    assert row["id"] == answer.headers["x-request-id"]
    assert "PROXY_BODY_READ_TIMEOUT_SECONDS" in row["error"]


def test_a_trickled_upload_gets_408_too(proxy: ProxyProcess, connection: socket.socket) -> None:
    """The timeout bounds the whole body, so a byte now and then does not keep it open."""
    connection.sendall(head("/api/llm/generate", make_token("trickler"), "Content-Length: 1000"))
    received: list[bytes] = []

    def one_more_byte() -> bytes:
        # The recv timeout paces the trickle (a byte every 0.2 s) and watches for the answer.
        with suppress(OSError):  # the proxy may already have answered and closed
            connection.sendall(b" ")
        connection.settimeout(0.2)
        try:
            received.append(connection.recv(65536))
        except TimeoutError:
            return b""
        return b"".join(received)

    wait_until(one_more_byte, timeout=BODY_READ_TIMEOUT + 10, interval=0)
    connection.settimeout(scaled(10))
    answer = read_answer_from(received, connection)
    assert answer.status == 408


def read_answer_from(received: list[bytes], sock: socket.socket) -> Answer:
    raw = b"".join(received)
    while b"\r\n\r\n" not in raw:
        chunk = sock.recv(65536)
        assert chunk, "connection closed without an answer"
        raw += chunk
    return Answer(raw)
