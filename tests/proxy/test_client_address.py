"""Which client address the proxy records: X-Forwarded-For only from configured proxies.

A client that can choose the address in the audit log (and in anything keyed on it) can hide
or frame someone; so by default nothing is trusted, and `PROXY_TRUSTED_PROXIES` lists the
reverse proxies (addresses or CIDR networks) whose forwarding headers are believed.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx

from tests.support.database import count_rows
from tests.support.proxy_process import ProxyProcess
from tests.support.timing import scaled, wait_until
from tests.support.tokens import auth

FORGED = "203.0.113.7"


def recorded_client(proxy: ProxyProcess) -> str:
    """Send one request claiming to come from FORGED; return the client its audit row names."""
    response = httpx.get(f"{proxy.url}/api/llm/models", timeout=scaled(10),
                         headers={**auth(), "X-Forwarded-For": FORGED})
    assert response.status_code == 200, response.text
    request_id = response.headers["x-request-id"]  # the server's own id keys the audit row
    database = proxy.env["DATABASE_URL"]
    wait_until(lambda: count_rows(database, "SELECT count(*) FROM audit_log WHERE id = $1",
                                  request_id))
    for candidate in (FORGED, "127.0.0.1"):
        if count_rows(database, "SELECT count(*) FROM audit_log WHERE id = $1 AND client = $2",
                      request_id, candidate):
            return candidate
    raise AssertionError(f"audit row {request_id} names neither {FORGED} nor 127.0.0.1")


def test_forwarded_for_is_ignored_by_default(proxy_factory, simulator) -> None:
    proxy = proxy_factory(OLLAMA_URL=simulator.url)
    assert recorded_client(proxy) == "127.0.0.1"


def test_a_configured_proxy_address_is_believed(proxy_factory, simulator) -> None:
    proxy = proxy_factory(OLLAMA_URL=simulator.url, PROXY_TRUSTED_PROXIES="127.0.0.1")
    assert recorded_client(proxy) == FORGED


def test_a_configured_network_is_believed(proxy_factory, simulator) -> None:
    proxy = proxy_factory(OLLAMA_URL=simulator.url,
                          PROXY_TRUSTED_PROXIES="10.0.0.0/8, 127.0.0.0/8")
    assert recorded_client(proxy) == FORGED


def test_a_peer_outside_the_list_is_not_believed(proxy_factory, simulator) -> None:
    proxy = proxy_factory(OLLAMA_URL=simulator.url, PROXY_TRUSTED_PROXIES="10.0.0.0/8,::1")
    assert recorded_client(proxy) == "127.0.0.1"


def check_config(tmp_path: Path, value: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("JWT_", "PROXY_"))}
    return subprocess.run([sys.executable, "-m", "proxy", "check-config"], cwd=tmp_path,
                          env={**clean, "PROXY_TRUSTED_PROXIES": value},
                          capture_output=True, text=True, timeout=scaled(60))


def test_a_bad_entry_is_a_configuration_error(tmp_path: Path) -> None:
    for value, message in [("proxy.example", "'proxy.example' is not an IP address or network"),
                           ("10.0.0.1/8", "did you mean 10.0.0.0/8"),
                           ("*", "'*' would let every client choose its address")]:
        result = check_config(tmp_path, value)
        assert result.returncode != 0, value
        assert "configuration error" in result.stderr
        assert "PROXY_TRUSTED_PROXIES" in result.stderr
        assert message in result.stderr
        assert "Traceback" not in result.stderr
