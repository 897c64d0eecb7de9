"""A caller that goes away cancels the upstream generation, streamed or not."""

from __future__ import annotations

import json
import socket
import time
import uuid
from collections.abc import Iterator
from urllib.parse import urlparse

import pytest

from tests.support.proxy_process import ProxyProcess, audit_entries, counted, metric, sim_stats
from tests.support.timing import scaled, wait_until
from tests.support.tokens import auth


@pytest.fixture
def slow_sim(sim) -> Iterator[object]:
    sim.configure(tokens_per_second=10)
    yield sim
    sim.configure(tokens_per_second=400)


def wait_for_cancellation(sim, expected: int = 1, timeout: float = 10) -> dict[str, object]:
    deadline = time.monotonic() + scaled(timeout)
    while True:
        stats = sim_stats(sim)
        if stats["cancelled"] >= expected and stats["active_streams"] == 0:
            return stats
        if time.monotonic() > deadline:
            raise AssertionError(f"upstream generation was not cancelled: {stats}")
        time.sleep(0.05)


# One streamed request per dialect: the same answer path cancels all of them.
MID_STREAM = {
    "llm": ("/api/llm/generate", {"model": "llama3.2", "prompt": "a long story",
                                  "options": {"num_predict": 200}}),
    "openai": ("/v1/chat/completions", {
        "model": "llama3.2", "messages": [{"role": "user", "content": "a long story"}],
        "stream": True, "max_tokens": 200}),
    "ollama": ("/ollama/api/chat", {
        "model": "llama3.2", "messages": [{"role": "user", "content": "a long story"}],
        "options": {"num_predict": 200}}),
}


@pytest.mark.parametrize("dialect", MID_STREAM)
def test_disconnect_mid_stream_cancels_upstream(proxy_server: ProxyProcess, slow_sim,
                                                dialect: str) -> None:
    path, body = MID_STREAM[dialect]
    with proxy_server.client() as client, client.stream(
        "POST", path, headers=auth(), json=body,
    ) as response:
        assert response.status_code == 200
        # Kept in a name: a dropped iterator would close the response, disconnecting early.
        lines = response.iter_lines()
        first = next(lines)  # NDJSON's first line, or SSE's first `data:` line
        assert '"response"' in first or '"content"' in first
        assert sim_stats(slow_sim)["active_streams"] == 1
    # Leaving the block closed the connection after one token of two hundred.
    stats = wait_for_cancellation(slow_sim)
    assert stats["completed"] == 0


@pytest.mark.parametrize("dialect", MID_STREAM)
def test_disconnect_mid_stream_is_audited_as_499(proxy_server: ProxyProcess, slow_sim,
                                                 dialect: str) -> None:
    path, body = MID_STREAM[dialect]
    user = f"leaver-{uuid.uuid4().hex[:10]}"
    before = counted(proxy_server, "llm_proxy_requests_total", status="499", api=dialect)
    with proxy_server.client() as client, client.stream(
        "POST", path, headers=auth(user), json=body,
    ) as response:
        assert response.status_code == 200
        lines = response.iter_lines()
        next(lines)
    wait_for_cancellation(slow_sim)
    entries = wait_until(lambda: audit_entries(proxy_server, user=user))
    assert [(e["status"], e["error"]) for e in entries] == [
        (499, "client disconnected mid-stream")]
    assert metric(proxy_server, "llm_proxy_requests_total", status="499",
                  api=dialect) == before + 1


def _raw_request(url: str, body: dict[str, object]) -> socket.socket:
    parsed = urlparse(url)
    sock = socket.create_connection((parsed.hostname, parsed.port))
    payload = json.dumps(body).encode()
    headers = (f"POST /api/llm/generate HTTP/1.1\r\nHost: {parsed.netloc}\r\n"
               f"Authorization: Bearer {auth()['Authorization'].split()[1]}\r\n"
               f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n\r\n")
    sock.sendall(headers.encode() + payload)
    return sock


@pytest.mark.parametrize("stream", [False, True])
def test_disconnect_before_any_output_cancels_upstream(proxy_server: ProxyProcess, slow_sim,
                                                       stream: bool) -> None:
    # Non-streamed: the proxy has sent nothing yet; streamed: it is waiting for the first token.
    slow_sim.configure(first_token_delay=1.0 if stream else 0.0)
    try:
        sock = _raw_request(proxy_server.url, {"model": "llama3.2", "prompt": "long",
                                               "stream": stream,
                                               "options": {"num_predict": 200}})
        wait_until(lambda: sim_stats(slow_sim)["active_streams"] == 1, timeout=5, interval=0.02)
        sock.close()
        stats = wait_for_cancellation(slow_sim)
        assert stats["completed"] == 0
    finally:
        slow_sim.configure(first_token_delay=0.01)


def test_proxy_keeps_serving_after_disconnects(proxy_server: ProxyProcess, sim) -> None:
    with proxy_server.client() as client:
        response = client.post("/api/llm/generate", headers=auth(),
                               json={"model": "llama3.2", "prompt": "still there?",
                                     "stream": False, "options": {"num_predict": 3}})
    assert response.status_code == 200
    assert response.json()["usage"]["completion_tokens"] == 3
