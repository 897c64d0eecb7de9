"""The attack set against a real proxy process: what only a server shows. Raw sockets (an upload
refused before its body, a stalled upload, the HTTP server's header cap: a 4xx and a closed
connection, never a hang), the server's own log, a forwarding header it must not believe, and
the WebSocket (a bad token closes with 1008, a bad frame gets an error frame). Each refusal the
application sees is audited and counted.

The rest of the attack set (tokens, bodies, request ids, limits, templates) runs in process, in
fast/test_attack_set.py.
"""

from __future__ import annotations

import json
import socket
import uuid
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from tests.proxy.forged_tokens import BAD_TOKENS, hs256_attack
from tests.support.database import count_rows
from tests.support.proxy_process import ProxyProcess, metric
from tests.support.timing import scaled, wait_until
from tests.support.tokens import auth, make_token

pytestmark = pytest.mark.usefixtures("sim")

GENERATE = "/api/llm/generate"
MAX_BODY = 64 * 1024


@pytest.fixture(scope="module")
def target(proxy_factory, simulator) -> ProxyProcess:
    return proxy_factory(
        OLLAMA_URL=simulator.url,
        PROXY_MAX_BODY_BYTES=str(MAX_BODY),
        PROXY_BODY_READ_TIMEOUT_SECONDS=str(scaled(2)),
    )


# -- what the checks need ---------------------------------------------------------------------

def requests_counted(target: ProxyProcess, status: int) -> float:
    try:
        return metric(target, "llm_proxy_requests_total", status=str(status))
    except AssertionError:  # no request has been counted at all yet
        return 0.0


def post(target: ProxyProcess, body: object = None, headers: dict[str, Any] | None = None,
         path: str = GENERATE, content: bytes | None = None) -> httpx.Response:
    with target.client() as client:
        if content is not None:
            return client.post(path, headers=headers or auth("mallory"), content=content)
        return client.post(path, headers=headers or auth("mallory"), json=body)


def generate_body(**extra: Any) -> dict[str, Any]:
    return {"model": "llama3.2", "prompt": "hello", "stream": False,
            "options": {"num_predict": 2}, **extra}


# -- JWT ----------------------------------------------------------------------------------------

def test_nothing_from_a_token_starts_a_log_line(target: ProxyProcess) -> None:
    token = hs256_attack({"crit": ["x\nFORGED-LOG-LINE"]})
    assert post(target, generate_body(), headers={"Authorization": f"Bearer {token}"}
                ).status_code == 401
    assert not any(line.startswith("FORGED-LOG-LINE") for line in target.log().splitlines())


# -- bodies -------------------------------------------------------------------------------------

def _raw(target: ProxyProcess, head: str, body: bytes = b"") -> bytes:
    """Send a request over a raw socket; return what came back before the server closed (a
    reset counts as closing)."""
    host, port = target.url.removeprefix("http://").split(":")
    chunks = []
    with socket.create_connection((host, int(port)), timeout=scaled(10)) as sock:
        try:
            sock.sendall(head.encode() + body)
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        except ConnectionResetError:
            pass
    return b"".join(chunks)


def test_an_unauthenticated_upload_is_refused_before_its_body(target: ProxyProcess) -> None:
    host = target.url.removeprefix("http://")
    answer = _raw(target, f"POST {GENERATE} HTTP/1.1\r\nHost: {host}\r\nContent-Type: "
                          f"application/json\r\nContent-Length: 100000000\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 401 "), answer[:200]


def test_a_stalled_upload_is_408_audited(target: ProxyProcess) -> None:
    host = target.url.removeprefix("http://")
    before = requests_counted(target, 408)
    answer = _raw(target, f"POST {GENERATE} HTTP/1.1\r\nHost: {host}\r\nAuthorization: "
                          f"{auth('slowpoke')['Authorization']}\r\nContent-Length: 500\r\n\r\n",
                  b'{"model": ')
    assert answer.startswith(b"HTTP/1.1 408 "), answer[:200]
    wait_until(lambda: requests_counted(target, 408) > before)
    wait_until(lambda: count_rows(target.env["DATABASE_URL"], "SELECT count(*) FROM audit_log "
                                  "WHERE \"user\" = $1 AND status = 408", "slowpoke") == 1)


# -- headers ------------------------------------------------------------------------------------

def test_an_oversized_header_is_refused_by_the_server_not_hung(target: ProxyProcess) -> None:
    host = target.url.removeprefix("http://")
    answer = _raw(target, f"GET /api/llm/models HTTP/1.1\r\nHost: {host}\r\n"
                          f"Cookie: {'c' * 200_000}\r\n\r\n")
    status = int(answer.split(b" ", 2)[1]) if answer.startswith(b"HTTP/1.1 ") else 0
    assert 400 <= status < 500 or answer == b"", answer[:200]


def test_a_forwarded_for_header_is_not_believed_by_default(target: ProxyProcess) -> None:
    # The HTTP server decides which peers' forwarding headers count (PROXY_TRUSTED_PROXIES).
    user = f"spoofer-{uuid.uuid4().hex[:6]}"
    response = post(target, generate_body(),
                    headers={**auth(user), "X-Forwarded-For": "203.0.113.7"})
    assert response.status_code == 200
    wait_until(lambda: count_rows(target.env["DATABASE_URL"], 'SELECT count(*) FROM audit_log '
                                  'WHERE "user" = $1 AND client = $2', user, "127.0.0.1") == 1)


# -- WebSocket ----------------------------------------------------------------------------------

def _ws_url(target: ProxyProcess, token: str | None) -> str:
    base = target.url.replace("http://", "ws://") + "/api/llm/ws"
    return f"{base}?token={token}" if token is not None else base


def _ws_rows(target: ProxyProcess, status: int) -> int:
    return count_rows(target.env["DATABASE_URL"], "SELECT count(*) FROM audit_log WHERE "
                      "endpoint = '/api/llm/ws' AND status = $1", status)


WS_BAD_TOKENS = [c for c in BAD_TOKENS if c[0] in ("alg none", "kid is a number",
                                                     "crit extension", "expired")]


@pytest.mark.parametrize(("case", "mint", "reason"), WS_BAD_TOKENS,
                         ids=[c[0] for c in WS_BAD_TOKENS])
def test_a_bad_token_closes_the_socket_with_1008_audited(target: ProxyProcess, case: str,
                                                         mint: Callable[[], str],
                                                         reason: str) -> None:
    before = _ws_rows(target, 401)
    with connect(_ws_url(target, mint()), open_timeout=scaled(10)) as ws:
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=scaled(10))
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008, case
    wait_until(lambda: _ws_rows(target, 401) > before)


WS_BAD_FRAMES: list[tuple[str, Callable[[], str], int]] = [
    ("nested 100000 deep", lambda: "[" * 100_000, 400),
    ("not an object", lambda: "[1]", 400),
    ("unknown type", lambda: json.dumps({"type": "\u0007\nrm -rf", "id": "1"}), 400),
    ("reserved option", lambda: json.dumps({"type": "generate", "id": "1", "model": "llama3.2",
                                            "prompt": "x", "options": {"num_gpu": 9}}), 422),
    ("unknown model", lambda: json.dumps({"type": "generate", "id": "1", "model": "ghost",
                                          "prompt": "x"}), 404),
]


@pytest.mark.parametrize(("case", "make", "status"), WS_BAD_FRAMES,
                         ids=[c[0] for c in WS_BAD_FRAMES])
def test_a_bad_frame_gets_an_error_frame_audited_and_the_socket_lives(
    target: ProxyProcess, case: str, make: Callable[[], str], status: int
) -> None:
    before = _ws_rows(target, status)
    with connect(_ws_url(target, make_token("wanda")), open_timeout=scaled(10)) as ws:
        assert json.loads(ws.recv(timeout=scaled(10)))["type"] == "ready"
        ws.send(make())
        frame = json.loads(ws.recv(timeout=scaled(10)))
        assert (frame["type"], frame["status"]) == ("error", status), (case, frame)
        assert "\n" not in frame["error"]
        ws.send(json.dumps({"type": "ping"}))
        assert json.loads(ws.recv(timeout=scaled(10))) == {"type": "pong"}
    wait_until(lambda: _ws_rows(target, status) > before)
