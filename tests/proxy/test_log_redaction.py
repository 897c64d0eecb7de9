"""The proxy's log as an operator's collector reads it, and what it never holds.

A real proxy runs with `PROXY_LOG_FORMAT=json` at debug level, with a password in each of its
URLs (database, Redis, the engine) and Redis out of reach (so that the limiter logs while
requests are served). It is sent what could leak a credential into a line: tokens in URL queries
(the WebSocket's `?token=`, any route's `?token=`/`?access_token=`), bad, forged and expired
JWTs in headers and queries, good tokens in each dialect. Then every line must be a JSON object,
each request must have its line (who, which model, which dialect, status, duration), every line
written while a request was served must carry that request's id, and no secret may appear
anywhere in the output.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import httpx
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from tests.support.proxy_process import ProxyProcess, free_port
from tests.support.timing import scaled, wait_until
from tests.support.tokens import SECRET, make_token


def _secret(name: str) -> str:
    return f"{name}-{uuid.uuid4().hex}"


@pytest.fixture(scope="module")
def passwords() -> dict[str, str]:
    return {name: _secret(name) for name in ("dbpw", "redispw", "enginepw")}


@pytest.fixture(scope="module")
def logged_proxy(postgres_url: str, proxy_factory, simulator,
                 passwords: dict[str, str]) -> ProxyProcess:
    # postgres_url first: its database is dropped only after the proxy has stopped.
    # Postgres trusts local connections and the simulator ignores credentials, so the
    # passwords are carried, and could be logged, without being needed.
    database = postgres_url.replace("://postgres@", f"://postgres:{passwords['dbpw']}@")
    engine = simulator.url.replace("://", f"://ollama:{passwords['enginepw']}@")
    return proxy_factory(
        OLLAMA_URL=engine, DATABASE_URL=database,
        REDIS_URL=f"redis://default:{passwords['redispw']}@127.0.0.1:{free_port()}/0",
        PROXY_LIMITER_FAILURE_MODE="open", PROXY_REDIS_POOL_TIMEOUT_SECONDS="1",
        PROXY_LOG_FORMAT="json", PROXY_LOG_LEVEL="debug")


def _lines(proxy: ProxyProcess) -> list[dict[str, Any]]:
    """The JSON lines of the proxy's output (the start-up banner on stdout is plain text)."""
    return [json.loads(line) for line in proxy.log().splitlines() if line.startswith("{")]


def _access(proxy: ProxyProcess, request_id: str) -> dict[str, Any] | None:
    return next((line for line in _lines(proxy)
                 if line["logger"] == "proxy.access" and line["request_id"] == request_id), None)


def _ws_generation(proxy: ProxyProcess, token: str) -> str:
    """One generation over a WebSocket authenticated by `?token=`; its request id."""
    url = proxy.url.replace("http://", "ws://") + f"/api/llm/ws?token={token}"
    with connect(url, open_timeout=scaled(10)) as ws:
        assert "ready" in str(ws.recv(timeout=scaled(10)))
        ws.send(json.dumps({"type": "generate", "id": "g1", "model": "llama3.2",
                            "prompt": "hi"}))
        while True:
            frame = json.loads(ws.recv(timeout=scaled(10)))
            if frame["type"] == "done":
                return str(frame["request_id"])
            assert frame["type"] == "token", frame


def test_json_lines_one_per_request_with_its_id_and_no_secret(
        logged_proxy: ProxyProcess, passwords: dict[str, str]) -> None:
    proxy = logged_proxy
    tokens = {name: make_token(name) for name in ("alice", "olga", "wendy", "quinn")}
    forged = make_token("mallory", "admin", secret="not-the-" + SECRET)
    expired = make_token("eve", ttl=-3600)
    opaque = _secret("opaque-access-token")

    with httpx.Client(base_url=proxy.url, timeout=scaled(30)) as client:
        chat = client.post("/api/llm/chat", headers={"Authorization": f"Bearer {tokens['alice']}"},
                           json={"model": "llama3.2", "stream": False,
                                 "messages": [{"role": "user", "content": "hello"}]})
        assert chat.status_code == 200, chat.text
        openai = client.post("/v1/chat/completions",
                             headers={"Authorization": f"Bearer {tokens['olga']}"},
                             json={"model": "llama3.2",
                                   "messages": [{"role": "user", "content": "hello"}]})
        assert openai.status_code == 200, openai.text
        refused = [client.get("/api/llm/models", headers={"Authorization": f"Bearer {bad}"})
                   for bad in (forged, expired, "eyJhbGciOiJub25lIn0.e30.", "not-a-jwt")]
        assert {r.status_code for r in refused} == {401}
        query = client.get(f"/api/llm/models?token={tokens['quinn']}&x=1")
        status = client.get(f"/api/llm/status?access_token={opaque}")
    ws_request = _ws_generation(proxy, tokens["wendy"])
    with pytest.raises(ConnectionClosed) as closed, connect(
            proxy.url.replace("http://", "ws://") + f"/api/llm/ws?token={forged}",
            open_timeout=scaled(10)) as ws:
        ws.recv(timeout=scaled(10))
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008

    answered = [chat, openai, *refused, query, status]
    wait_until(lambda: all(_access(proxy, r.headers["x-request-id"]) for r in answered)
               and _access(proxy, ws_request), timeout=scaled(10))

    # After the plain start-up banner (stdout), every line is a JSON object.
    output = proxy.log().splitlines()
    logged = output[next(i for i, line in enumerate(output) if line.startswith("{")):]
    assert [line for line in logged if not line.startswith("{")] == []
    lines = _lines(proxy)
    assert {"time", "level", "logger", "request_id", "message"} <= set(lines[-1])

    line = _access(proxy, chat.headers["x-request-id"])
    assert line is not None
    assert (line["method"], line["path"], line["status"]) == ("POST", "/api/llm/chat", 200)
    assert (line["user"], line["model"], line["dialect"]) == ("alice", "llama3.2:latest", "llm")
    assert line["duration_ms"] > 0 and line["ttft_ms"] > 0 and line["level"] == "INFO"
    line = _access(proxy, openai.headers["x-request-id"])
    assert line is not None
    assert (line["user"], line["model"], line["dialect"]) == ("olga", "llama3.2:latest", "openai")
    line = _access(proxy, ws_request)
    assert line is not None
    assert (line["method"], line["user"], line["model"], line["status"]) == (
        "WS", "wendy", "llama3.2:latest", 200)
    line = _access(proxy, refused[0].headers["x-request-id"])
    assert line is not None and (line["status"], line["user"]) == (401, None)
    line = _access(proxy, query.headers["x-request-id"])
    assert line is not None and line["path"] == "/api/llm/models?token=***&x=1"
    line = _access(proxy, status.headers["x-request-id"])
    assert line is not None and line["level"] == "DEBUG"
    assert line["path"] == "/api/llm/status?access_token=***"

    # What the limiter logged while the chat was served (Redis is out of reach) carries the
    # chat's request id, as every line written inside a request does.
    limiter = [line for line in lines if line["logger"] == "proxy.limits"]
    assert limiter, "the limiter logged nothing about the unreachable Redis"
    assert chat.headers["x-request-id"] in {line["request_id"] for line in limiter}
    assert all(line["request_id"] != "-" for line in limiter)

    log = proxy.log()
    secrets = [SECRET, forged, expired, opaque, *tokens.values(), *passwords.values(),
               *(token.split(".")[2] for token in [*tokens.values(), forged, expired])]
    leaked = [secret for secret in secrets if secret in log]
    assert not leaked, f"secrets in the log: {leaked}"
    # The WebSocket handshakes are there, their tokens masked.
    assert "/api/llm/ws?token=***" in log
