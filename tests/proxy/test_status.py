"""GET /api/llm/status: public, 200 when every part works, 503 naming the part that does not."""

from __future__ import annotations

import httpx

from proxy import __version__
from tests.proxy.conftest import ProxyProcess, free_port
from tests.timing import scaled


def test_all_well_is_200(proxy_server: ProxyProcess, sim) -> None:
    with proxy_server.client() as client:
        response = client.get("/api/llm/status")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok"
    assert body["version"] == __version__
    assert body["upstream"]["ok"] is True
    assert body["upstream"]["version"] == "0.33.0"
    assert body["database"]["ok"] is True
    assert body["failing"] == []


def test_upstream_down_is_503_naming_it(proxy_factory) -> None:
    proxy = proxy_factory(OLLAMA_URL=f"http://127.0.0.1:{free_port()}")
    with proxy.client() as client:
        response = client.get("/api/llm/status")
    assert response.status_code == 503
    body = response.json()
    assert body["failing"] == ["upstream"]
    assert body["upstream"]["ok"] is False
    assert "cannot connect" in body["upstream"]["error"]
    assert body["database"]["ok"] is True


def test_database_down_is_503_naming_it(proxy_factory, simulator) -> None:
    proxy = proxy_factory(
        OLLAMA_URL=simulator.url, PROXY_AUTO_MIGRATE="false",
        DATABASE_URL=f"postgresql://postgres@127.0.0.1:{free_port()}/nothing",
    )
    with proxy.client() as client:
        response = client.get("/api/llm/status")
    assert response.status_code == 503
    body = response.json()
    assert body["failing"] == ["database"]
    assert body["database"]["error"]
    assert body["upstream"]["ok"] is True


def test_redis_is_checked_when_configured(proxy_factory, simulator) -> None:
    healthy = proxy_factory(OLLAMA_URL=simulator.url, REDIS_URL="redis://127.0.0.1:6379/0")
    body = httpx.get(f"{healthy.url}/api/llm/status", timeout=scaled(10)).json()
    assert body["redis"] == {"ok": True, "error": None}
    down = proxy_factory(OLLAMA_URL=simulator.url,
                         REDIS_URL=f"redis://127.0.0.1:{free_port()}/0")
    response = httpx.get(f"{down.url}/api/llm/status", timeout=scaled(10))
    assert response.status_code == 503
    assert response.json()["failing"] == ["redis"]


def test_without_redis_there_is_no_redis_part(proxy_server: ProxyProcess) -> None:
    status = httpx.get(f"{proxy_server.url}/api/llm/status", timeout=scaled(10))
    assert status.json()["redis"] is None
