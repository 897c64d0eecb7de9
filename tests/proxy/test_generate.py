"""A stream is relayed as it arrives, not buffered: over real HTTP, proxy and simulator as
processes. Every other check of POST /api/llm/generate and /api/llm/models runs in process, in
fast/test_generate.py."""

from __future__ import annotations

import time

import pytest

from tests.support.proxy_process import ProxyProcess
from tests.support.tokens import auth

pytestmark = pytest.mark.usefixtures("sim")


def test_streaming_is_incremental_not_buffered(proxy_server: ProxyProcess, sim) -> None:
    sim.configure(tokens_per_second=20)
    try:
        arrivals: list[float] = []
        with proxy_server.client() as client, client.stream(
            "POST", "/api/llm/generate", headers=auth(),
            json={"model": "llama3.2", "prompt": "count", "options": {"num_predict": 10}},
        ) as response:
            for line in response.iter_lines():
                if line.strip():
                    arrivals.append(time.monotonic())
        # 10 tokens at 20/s take ~0.5 s upstream; a buffering proxy would deliver them at once.
        assert len(arrivals) == 11
        assert arrivals[-2] - arrivals[0] > 0.2
    finally:
        sim.configure(tokens_per_second=400)


@pytest.mark.parametrize("stream", [False, True])
def test_finished_generations_reuse_one_upstream_connection(proxy_server: ProxyProcess, sim,
                                                            stream: bool) -> None:
    """An answer read to its end leaves its connection to Ollama in the pool: twenty requests
    one after another, one connection (a new one for each would cost a TCP handshake per
    request and leave a socket in TIME_WAIT)."""
    with proxy_server.client() as client:
        for _ in range(20):
            response = client.post("/api/llm/generate", headers=auth(), json={
                "model": "llama3.2", "prompt": "hi", "stream": stream,
                "options": {"num_predict": 3}})
            assert response.status_code == 200, response.text
    assert sim.stats()["requests"]["/api/generate"] == 20
    # One, or two if the health probe held the idle connection just as a request came.
    assert sim.stats()["connections"]["/api/generate"] <= 2
