"""Every upstream failure the simulator can produce maps to its documented answer, in process.
(Each branch of the one mapping function, through httpx's MockTransport, is in
tests/proxy/test_errors.py.)"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import httpx
import pytest
import yaml

from tests.support.proxy_app import InProcessProxy, MakeProxy
from tests.support.proxy_process import free_port, sim_fault, sim_stats
from tests.support.timing import scaled
from tests.support.tokens import auth

GENERATE = {"model": "llama3.2", "prompt": "hello", "stream": False}


async def post(proxy: InProcessProxy, body: dict[str, object] = GENERATE) -> httpx.Response:
    return await proxy.client.post("/api/llm/generate", headers=auth(), json=body)


async def test_connect_error_is_503(make_proxy: MakeProxy) -> None:
    proxy = await make_proxy(ollama_url=f"http://127.0.0.1:{free_port()}")
    response = await post(proxy)
    assert response.status_code == 503
    assert "cannot connect" in response.json()["error"]
    assert response.headers["retry-after"]


FIRST_TOKEN_TIMEOUT = 1.0


def upstreams_file(tmp_path: Path, kind: str, url: str) -> Path:
    path = tmp_path / "upstreams.yml"
    path.write_text(yaml.safe_dump({"upstreams": [
        {"name": "engine", "kind": kind, "url": url, "models": ["llama3.2"]}]}))
    return path


@pytest.fixture(params=["ollama", "openai"])
async def impatient(request: pytest.FixtureRequest, make_proxy: MakeProxy, simulator,
                    tmp_path: Path) -> InProcessProxy:
    """A proxy that allows an engine of each kind FIRST_TOKEN_TIMEOUT for its first token."""
    kind = str(request.param)
    url = simulator.url if kind == "ollama" else f"{simulator.url}/v1"
    return await make_proxy(ollama_first_token_timeout=FIRST_TOKEN_TIMEOUT,
                            ollama_answer_timeout=2 * FIRST_TOKEN_TIMEOUT,
                            proxy_upstreams_file=upstreams_file(tmp_path, kind, url))


@pytest.mark.parametrize(("stream", "limit", "says"), [
    (True, FIRST_TOKEN_TIMEOUT, "no first token within 1 s (OLLAMA_FIRST_TOKEN_TIMEOUT)"),
    # A non-streamed request is sent upstream non-streamed: nothing comes before the whole
    # answer, so only the answer's own deadline can tell a hung engine.
    (False, 2 * FIRST_TOKEN_TIMEOUT, "no answer within 2 s (OLLAMA_ANSWER_TIMEOUT)"),
], ids=["stream", "whole"])
async def test_a_hung_engine_is_504_after_its_deadline(impatient: InProcessProxy, sim,
                                                       stream: bool, limit: float,
                                                       says: str) -> None:
    sim_fault(sim, "hang")
    started = time.monotonic()
    response = await asyncio.wait_for(post(impatient, {**GENERATE, "stream": stream}),
                                      scaled(10))
    waited = time.monotonic() - started
    assert response.status_code == 504
    assert says in response.json()["error"]
    assert limit <= waited < limit + scaled(3)


async def test_a_steady_stream_longer_than_the_first_token_timeout_is_not_cut(
    impatient: InProcessProxy, sim
) -> None:
    # Three seconds of output, a token every 0.2 s: only the gap between chunks is bounded.
    sim.configure(tokens_per_second=5)
    response = await asyncio.wait_for(impatient.client.post(
        "/api/llm/generate", headers=auth(),
        json={**GENERATE, "stream": True, "options": {"num_predict": 15}}), scaled(20))
    assert response.status_code == 200
    lines = [json.loads(line) for line in response.text.splitlines()]
    assert lines[-1]["done"] is True and "error" not in lines[-1]
    assert lines[-1]["usage"]["completion_tokens"] == 15


async def test_a_slow_model_load_within_the_first_token_timeout_is_not_cut(
    make_proxy: MakeProxy, sim
) -> None:
    # Loading takes longer than the gap allowed between chunks, but not than the first token's.
    proxy = await make_proxy(ollama_read_timeout=0.5, ollama_first_token_timeout=5)
    sim.configure(first_token_delay=1.5)
    response = await asyncio.wait_for(post(proxy), scaled(20))
    assert response.status_code == 200, response.text


async def test_an_engine_silent_mid_stream_is_cut_after_the_read_timeout(
    make_proxy: MakeProxy, sim
) -> None:
    proxy = await make_proxy(ollama_read_timeout=0.5, ollama_first_token_timeout=5)
    sim.configure(tokens_per_second=1)
    response = await asyncio.wait_for(proxy.client.post(
        "/api/llm/generate", headers=auth(),
        json={**GENERATE, "stream": True, "options": {"num_predict": 5}}), scaled(20))
    assert response.status_code == 200
    end = json.loads(response.text.splitlines()[-1])
    assert end["status"] == 504
    assert "nothing for 0.5 s mid-stream (OLLAMA_READ_TIMEOUT)" in end["error"]


async def test_unknown_model_is_404(proxy: InProcessProxy, sim) -> None:
    response = await post(proxy, {**GENERATE, "model": "ghost"})
    assert response.status_code == 404
    assert response.json()["error"] == "model 'ghost' not found"


async def test_upstream_500_is_502(proxy: InProcessProxy, sim) -> None:
    sim_fault(sim, "error500", 1)
    response = await post(proxy)
    assert response.status_code == 502
    assert response.json()["error"].startswith("upstream error (500)")


async def test_upstream_queue_full_is_503(proxy: InProcessProxy, sim) -> None:
    sim_fault(sim, "busy503", 1)
    response = await post(proxy)
    assert response.status_code == 503
    assert "server busy" in response.json()["error"]


async def test_upstream_dropping_the_connection_is_502(proxy: InProcessProxy, sim) -> None:
    sim_fault(sim, "disconnect", 1)
    response = await post(proxy)
    assert response.status_code == 502
    assert "closed the connection" in response.json()["error"]


async def test_midstream_failure_ends_the_stream_with_an_error_line(
    proxy: InProcessProxy, sim
) -> None:
    sim_fault(sim, "midstream_error", 1)
    response = await proxy.client.post("/api/llm/generate", headers=auth(),
                                       json={**GENERATE, "stream": True})
    assert response.status_code == 200
    lines = [json.loads(line) for line in response.text.splitlines()]
    assert any(line.get("response") for line in lines[:-1])
    assert lines[-1]["done"] is True
    assert lines[-1]["status"] == 502
    assert "mid-stream" in lines[-1]["error"]


async def test_midstream_failure_without_streaming_is_502(proxy: InProcessProxy, sim) -> None:
    sim_fault(sim, "midstream_error", 1)
    response = await post(proxy)
    assert response.status_code == 502
    assert sim_stats(sim)["requests"]["/api/generate"] >= 1
