"""GET /api/llm/status against a real proxy process: no URL is ever shown with its credentials,
neither in the admin's details nor in what `serve` prints at startup. Every other status check
runs in process, in fast/test_status.py."""

from __future__ import annotations

import httpx

from tests.support.proxy_process import ProxyProcess
from tests.support.timing import scaled
from tests.support.tokens import admin_auth

UPSTREAM_PASSWORD = "upstream-pw-4f1c9a"


def get_status(proxy: ProxyProcess, headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.get(f"{proxy.url}/api/llm/status", headers=headers, timeout=scaled(10))


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
