"""GET /api/llm/status, in process: public, 200 when every part works, 503 naming the part that
does not. (That `serve` names the upstream without its password at startup needs a process:
tests/proxy/test_status.py.)

The public answer is only `status` and the names in `failing` (the Docker healthcheck needs no
more); versions, the upstream URL and error texts are `details`, shown to admins only, and no
URL is ever shown with its credentials.
"""

from __future__ import annotations

from typing import Any

import httpx

from proxy import __version__
from tests.support.proxy_app import InProcessProxy, MakeProxy
from tests.support.proxy_process import free_port
from tests.support.tokens import admin_auth, auth, make_token

DATABASE_PASSWORD = "database-pw-77e0b2"
REDIS_PASSWORD = "redis-pw-d3a5c1"


async def get_status(proxy: InProcessProxy, headers: dict[str, str] | None = None
                     ) -> httpx.Response:
    return await proxy.client.get("/api/llm/status", headers=headers)


async def details(proxy: InProcessProxy) -> dict[str, Any]:
    body: dict[str, Any] = (await get_status(proxy, admin_auth())).json()["details"]
    return body


async def test_all_well_is_200(proxy: InProcessProxy, sim) -> None:
    response = await get_status(proxy)
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "failing": []}


async def test_an_admin_sees_the_details(proxy: InProcessProxy, sim) -> None:
    response = await get_status(proxy, admin_auth())
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok"
    assert body["failing"] == []
    assert body["details"]["version"] == __version__
    assert body["details"]["upstream"]["ok"] is True
    assert body["details"]["upstream"]["version"] == "0.33.0"
    assert body["details"]["database"]["ok"] is True


async def test_a_user_or_a_bad_token_gets_the_public_answer(proxy: InProcessProxy, sim) -> None:
    forged = make_token("root", "admin", secret="not-the-proxy-secret-" + "q" * 20)
    for headers in (auth("alice", "user"), {"Authorization": "Bearer not-a-token"},
                    {"Authorization": f"Bearer {forged}"}):
        response = await get_status(proxy, headers)
        assert response.status_code == 200
        assert response.json() == {"status": "ok", "failing": []}, headers


async def test_upstream_down_is_503_naming_it(make_proxy: MakeProxy) -> None:
    port = free_port()
    proxy = await make_proxy(ollama_url=f"http://127.0.0.1:{port}")
    response = await get_status(proxy)
    assert response.status_code == 503
    assert response.json() == {"status": "degraded", "failing": ["upstream"]}
    assert str(port) not in response.text
    upstream = (await details(proxy))["upstream"]
    assert upstream["ok"] is False
    assert "cannot connect" in upstream["error"]
    assert (await details(proxy))["database"]["ok"] is True


async def test_database_down_is_503_naming_it(make_proxy: MakeProxy) -> None:
    port = free_port()
    proxy = await make_proxy(
        proxy_auto_migrate=False,
        database_url=f"postgresql://postgres:{DATABASE_PASSWORD}@127.0.0.1:{port}/nothing",
    )
    response = await get_status(proxy)
    assert response.status_code == 503
    assert response.json() == {"status": "degraded", "failing": ["database"]}
    admin = await get_status(proxy, admin_auth())
    assert admin.status_code == 503
    assert admin.json()["details"]["database"]["error"]
    assert admin.json()["details"]["upstream"]["ok"] is True
    assert DATABASE_PASSWORD not in admin.text


async def test_redis_is_checked_when_configured(make_proxy: MakeProxy) -> None:
    healthy = await make_proxy(redis_url="redis://127.0.0.1:6379/0")
    assert (await get_status(healthy)).json() == {"status": "ok", "failing": []}
    assert (await details(healthy))["redis"] == {"ok": True, "error": None}
    port = free_port()
    down = await make_proxy(redis_url=f"redis://:{REDIS_PASSWORD}@127.0.0.1:{port}/0")
    response = await get_status(down)
    assert response.status_code == 503
    assert response.json() == {"status": "degraded", "failing": ["redis"]}
    admin = await get_status(down, admin_auth())
    assert admin.json()["details"]["redis"]["error"]
    assert REDIS_PASSWORD not in admin.text


async def test_without_redis_there_is_no_redis_part(proxy: InProcessProxy) -> None:
    assert (await details(proxy))["redis"] is None
