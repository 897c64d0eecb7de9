"""Authentication against a real proxy process: what only a process shows (its log, and a
refusal to start). Every other authentication check runs in process, in fast/test_auth.py."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from tests.proxy.forged_tokens import hs256_token
from tests.support.database import count_rows
from tests.support.proxy_process import ProxyProcess
from tests.support.timing import scaled, wait_until

pytestmark = pytest.mark.usefixtures("sim")


def models(proxy: ProxyProcess, token: str | None):
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    with proxy.client() as client:
        return client.get("/api/llm/models", headers=headers)


def test_nothing_from_a_token_reaches_a_log_line_unescaped(proxy_factory, simulator) -> None:
    # Debug level: whatever the proxy logs at all must show up here.
    proxy = proxy_factory(OLLAMA_URL=simulator.url, PROXY_LOG_LEVEL="debug")
    marker = "FORGED-LOG-LINE"
    now = int(time.time())
    tokens = [
        hs256_token({"alg": "HS256", "crit": [f"x\n{marker} crit", f"y\u2028{marker} crit"]}),
        hs256_token({"alg": "HS256", "kid": f"k\r\n{marker} kid"}, key="another-key"),
        hs256_token({"alg": f"HS256\n{marker} alg"}),
        hs256_token({"alg": "HS256", "typ": f"JWT\n{marker} typ"},
                    {"sub": f"a\n{marker} sub", "exp": now + 600}),
    ]
    for token in tokens:
        response = models(proxy, token)
        assert response.status_code == 401, response.text[:300]
        assert response.json()["error"].isprintable()
    forged = [line for line in proxy.log().splitlines() if line.startswith(marker)]
    assert forged == []
    db = proxy.env["DATABASE_URL"]
    wait_until(lambda: count_rows(db, "SELECT count(*) FROM audit_log WHERE status = 401")
               == len(tokens))
    assert count_rows(db, "SELECT count(*) FROM audit_log WHERE error LIKE $1", "%\n%") == 0


@pytest.mark.parametrize(("env", "message"), [
    ({"JWT_SECRET": ""}, "JWT_SECRET is not set"),
    ({"JWT_SECRET": "short"}, "too short"),
    ({"JWT_SECRET": "changeme"}, "placeholder"),
    ({"JWT_ALGORITHMS": "none"}, "'none' is never accepted"),
    ({"JWT_ALGORITHMS": "RS256"}, "neither JWT_PUBLIC_KEY nor JWT_JWKS_URL"),
])
def test_production_refuses_to_start_without_a_real_key(tmp_path, env: dict[str, str],
                                                        message: str) -> None:
    import os
    import secrets

    # Everything else is production-grade, so that the one flaw under test is what is refused.
    full_env = {**{k: v for k, v in os.environ.items() if not k.startswith(("JWT_", "PROXY_"))},
                "PROXY_ENV": "production", "JWT_SECRET": secrets.token_hex(32),
                "DATABASE_URL": "postgresql://llm@127.0.0.1:5432/llm",
                "REDIS_URL": "redis://127.0.0.1:6379/0", **env}
    result = subprocess.run([sys.executable, "-m", "proxy", "serve", "--port", "1"],
                            cwd=tmp_path, env=full_env, capture_output=True, text=True,
                            timeout=scaled(60))
    assert result.returncode != 0
    assert "configuration error" in result.stderr
    assert message in result.stderr
