"""The built-in web page's security headers, in process. (The page itself, in a real browser,
is tested against a real proxy in tests/proxy/test_web_ui.py.)"""

from __future__ import annotations

from tests.support.proxy_app import InProcessProxy


async def test_security_headers_on_the_page(proxy: InProcessProxy) -> None:
    response = await proxy.client.get("/")
    assert response.status_code == 200
    policy = response.headers["content-security-policy"]
    assert "script-src 'self'" in policy
    assert "frame-ancestors 'none'" in policy
    assert "unsafe-inline" not in policy
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["x-frame-options"] == "DENY"
    assert response.headers["referrer-policy"] == "no-referrer"
