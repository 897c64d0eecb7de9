"""GET /api/llm/status: public, 200 when every part works, 503 naming the part that does not.

The public answer is only `status` and the names in `failing` (the Docker healthcheck needs no
more); versions, the upstream URL and error texts are `details`, shown to admins only, and no
URL is ever shown with its credentials.
"""

from __future__ import annotations

from typing import Any

import httpx

from proxy import __version__
from tests.support.proxy_process import ProxyProcess, free_port
from tests.support.timing import scaled
from tests.support.tokens import admin_auth, auth, make_token

UPSTREAM_PASSWORD = "upstream-pw-4f1c9a"
DATABASE_PASSWORD = "database-pw-77e0b2"
REDIS_PASSWORD = "redis-pw-d3a5c1"


def get_status(proxy: ProxyProcess, headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.get(f"{proxy.url}/api/llm/status", headers=headers, timeout=scaled(10))


def details(proxy: ProxyProcess) -> dict[str, Any]:
    body: dict[str, Any] = get_status(proxy, admin_auth()).json()["details"]
    return body


def test_all_well_is_200(proxy_server: ProxyProcess, sim) -> None:
    response = get_status(proxy_server)
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "failing": []}


def test_an_admin_sees_the_details(proxy_server: ProxyProcess, sim) -> None:
    response = get_status(proxy_server, admin_auth())
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok"
    assert body["failing"] == []
    assert body["details"]["version"] == __version__
    assert body["details"]["upstream"]["ok"] is True
    assert body["details"]["upstream"]["version"] == "0.33.0"
    assert body["details"]["database"]["ok"] is True


def test_a_user_or_a_bad_token_gets_the_public_answer(proxy_server: ProxyProcess, sim) -> None:
    forged = make_token("root", "admin", secret="not-the-proxy-secret-" + "q" * 20)
    for headers in (auth("alice", "user"), {"Authorization": "Bearer not-a-token"},
                    {"Authorization": f"Bearer {forged}"}):
        response = get_status(proxy_server, headers)
        assert response.status_code == 200
        assert response.json() == {"status": "ok", "failing": []}, headers


def test_upstream_down_is_503_naming_it(proxy_factory) -> None:
    port = free_port()
    proxy = proxy_factory(OLLAMA_URL=f"http://127.0.0.1:{port}")
    response = get_status(proxy)
    assert response.status_code == 503
    assert response.json() == {"status": "degraded", "failing": ["upstream"]}
    assert str(port) not in response.text
    upstream = details(proxy)["upstream"]
    assert upstream["ok"] is False
    assert "cannot connect" in upstream["error"]
    assert details(proxy)["database"]["ok"] is True


def test_database_down_is_503_naming_it(proxy_factory, simulator) -> None:
    port = free_port()
    proxy = proxy_factory(
        OLLAMA_URL=simulator.url, PROXY_AUTO_MIGRATE="false",
        DATABASE_URL=f"postgresql://postgres:{DATABASE_PASSWORD}@127.0.0.1:{port}/nothing",
    )
    response = get_status(proxy)
    assert response.status_code == 503
    assert response.json() == {"status": "degraded", "failing": ["database"]}
    admin = get_status(proxy, admin_auth())
    assert admin.status_code == 503
    assert admin.json()["details"]["database"]["error"]
    assert admin.json()["details"]["upstream"]["ok"] is True
    assert DATABASE_PASSWORD not in admin.text


def test_redis_is_checked_when_configured(proxy_factory, simulator) -> None:
    healthy = proxy_factory(OLLAMA_URL=simulator.url, REDIS_URL="redis://127.0.0.1:6379/0")
    assert get_status(healthy).json() == {"status": "ok", "failing": []}
    assert details(healthy)["redis"] == {"ok": True, "error": None}
    port = free_port()
    down = proxy_factory(OLLAMA_URL=simulator.url,
                         REDIS_URL=f"redis://:{REDIS_PASSWORD}@127.0.0.1:{port}/0")
    response = get_status(down)
    assert response.status_code == 503
    assert response.json() == {"status": "degraded", "failing": ["redis"]}
    admin = get_status(down, admin_auth())
    assert admin.json()["details"]["redis"]["error"]
    assert REDIS_PASSWORD not in admin.text


def test_without_redis_there_is_no_redis_part(proxy_server: ProxyProcess) -> None:
    assert details(proxy_server)["redis"] is None


def test_the_upstream_url_is_never_shown_with_its_credentials(proxy_factory, simulator) -> None:
    host_port = simulator.url.removeprefix("http://")
    proxy = proxy_factory(OLLAMA_URL=f"http://ollama:{UPSTREAM_PASSWORD}@{host_port}")
    public = get_status(proxy)
    assert public.status_code == 200
    assert public.json() == {"status": "ok", "failing": []}
    admin = get_status(proxy, admin_auth())
    assert admin.json()["details"]["upstream"]["url"] == f"http://***@{host_port}"
    assert UPSTREAM_PASSWORD not in admin.text
    # What `serve` printed at startup names the upstream, without the password.
    assert f"upstream http://***@{host_port}" in proxy.log()
    assert UPSTREAM_PASSWORD not in proxy.log()
