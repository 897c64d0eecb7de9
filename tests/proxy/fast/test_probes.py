"""GET /livez and /readyz, in process: no token, liveness checks nothing, readiness names what
is missing (and nothing more: no host, port or error text)."""

from __future__ import annotations

import httpx

from tests.support.proxy_app import InProcessProxy, MakeProxy
from tests.support.proxy_process import free_port
from tests.support.timing import wait_until_async

DATABASE_PASSWORD = "probe-db-pw-51c9"


async def test_alive_and_ready_with_every_part_working(proxy: InProcessProxy, sim) -> None:
    live = await proxy.client.get("/livez")
    assert (live.status_code, live.json()) == (200, {"status": "ok"})
    ready = await proxy.client.get("/readyz")
    assert (ready.status_code, ready.json()) == (200, {"status": "ready"})


async def test_an_engine_down_is_not_ready_yet_still_alive(make_proxy: MakeProxy) -> None:
    port = free_port()
    proxy = await make_proxy(ollama_url=f"http://127.0.0.1:{port}")
    # The router's first probe takes the engine out of rotation.
    ready = await wait_until_async(lambda: _status(proxy, "/readyz", 503))
    assert ready.json() == {"status": "not ready", "missing": ["upstream"]}
    assert str(port) not in ready.text
    assert (await proxy.client.get("/livez")).status_code == 200


async def test_the_database_and_redis_down_are_named(make_proxy: MakeProxy, sim) -> None:
    proxy = await make_proxy(
        proxy_auto_migrate=False,
        database_url=f"postgresql://postgres:{DATABASE_PASSWORD}@127.0.0.1:{free_port()}/x",
        redis_url=f"redis://127.0.0.1:{free_port()}/0",
    )
    ready = await proxy.client.get("/readyz")
    assert ready.status_code == 503
    assert ready.json() == {"status": "not ready", "missing": ["database", "redis"]}
    assert DATABASE_PASSWORD not in ready.text
    assert (await proxy.client.get("/livez")).status_code == 200


async def _status(proxy: InProcessProxy, path: str, status: int) -> httpx.Response | None:
    response = await proxy.client.get(path)
    return response if response.status_code == status else None
