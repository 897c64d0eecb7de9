"""Every upstream failure the simulator can produce maps to its documented answer, in process.
(Each branch of the one mapping function, through httpx's MockTransport, is in
tests/proxy/test_errors.py.)"""

from __future__ import annotations

import json

import httpx

from tests.support.proxy_app import InProcessProxy, MakeProxy
from tests.support.proxy_process import free_port, sim_fault, sim_stats
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


async def test_timeout_is_504(make_proxy: MakeProxy, sim) -> None:
    proxy = await make_proxy(ollama_read_timeout=0.5)
    sim_fault(sim, "hang", 1)
    response = await post(proxy)
    assert response.status_code == 504
    assert "timed out" in response.json()["error"]


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
