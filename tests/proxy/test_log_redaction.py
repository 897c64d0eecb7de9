"""No log line of the proxy holds a credential, even one a client put in a URL.

The WebSocket takes its token as `?token=`, and uvicorn logs every request line with its query
string (access log) and every WebSocket handshake: a real proxy is run at log level info, such
requests are made, and its whole log is searched for the tokens.
"""

from __future__ import annotations

import httpx
from websockets.sync.client import connect

from tests.support.timing import scaled, wait_until
from tests.support.tokens import make_token


def test_query_tokens_never_reach_the_log(proxy_factory, simulator) -> None:
    proxy = proxy_factory(OLLAMA_URL=simulator.url, PROXY_LOG_LEVEL="info")
    ws_token = make_token("wendy")
    query_token = make_token("quinn")
    opaque = "opaque-access-token-5e1f0c"

    ws_url = proxy.url.replace("http://", "ws://") + f"/api/llm/ws?token={ws_token}"
    with connect(ws_url, open_timeout=scaled(10)) as ws:
        assert "ready" in str(ws.recv(timeout=scaled(10)))
    httpx.get(f"{proxy.url}/api/llm/models?token={query_token}&x=1", timeout=scaled(10))
    httpx.get(f"{proxy.url}/api/llm/status?access_token={opaque}", timeout=scaled(10))

    wait_until(lambda: "/api/llm/status?access_token=" in proxy.log())
    log = proxy.log()
    for secret in (ws_token, query_token, opaque, ws_token.split(".")[2]):
        assert secret not in log
    # The lines themselves are there, with the values masked.
    assert "/api/llm/ws?token=***" in log
    assert "/api/llm/models?token=***&x=1" in log
    assert "/api/llm/status?access_token=***" in log
