"""The built-in web page's and the API documentation's security headers and sources, in
process. (The pages themselves, in a real browser, are tested against a real proxy in
tests/proxy/test_web_ui.py.)"""

from __future__ import annotations

import re

import pytest

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


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
async def test_the_api_documentation_loads_only_the_proxys_own_files(
        proxy: InProcessProxy, page: str) -> None:
    response = await proxy.client.get(page)
    assert response.status_code == 200
    sources = re.findall(r'(?:src|href)="([^"]*)"', response.text)
    assert sources and all(source.startswith("/docs-assets/") for source in sources), sources
    assert "cdn" not in response.text.lower() and "fonts.googleapis" not in response.text
    for source in sources:
        asset = await proxy.client.get(source)
        assert asset.status_code == 200 and len(asset.content) > 1000, source
    # The policy lets the page's own inline starter run, and nothing load from elsewhere.
    policy = response.headers["content-security-policy"]
    assert "default-src 'self'" in policy and "http" not in policy
