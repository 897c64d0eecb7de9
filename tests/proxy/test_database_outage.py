"""The proxy without its database, against real processes and the real Postgres behind a
forwarder the test cuts (tests/proxy/outage.py): it starts and serves generation, which needs no
database, while the audit rows wait in the spool; the routes that do need the database answer
503 with the usual JSON error and Retry-After; and when the database returns, the schema is
migrated and every row made meanwhile reaches it. (Rows across an outage of a running proxy,
and hard kills, are in test_audit.py.)"""

from __future__ import annotations

import uuid
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from tests.proxy.audit_rows import generate, wait_rows
from tests.proxy.outage import postgres_outage, url_through
from tests.support.database import postgres_database
from tests.support.proxy_process import start_proxy, stop_proxy
from tests.support.timing import scaled, wait_until
from tests.support.tokens import admin_auth, auth

pytestmark = pytest.mark.usefixtures("sim")


def status(url: str) -> httpx.Response:
    return httpx.get(f"{url}/api/llm/status", timeout=scaled(10))


def test_a_proxy_starts_without_its_database_and_catches_up_when_it_returns(
        simulator, tmp_path: Path) -> None:
    user = f"u-{uuid.uuid4().hex[:8]}"
    # A database never reached yet: the schema is made when it returns.
    with contextmanager(postgres_database)() as postgres_url, \
            postgres_outage(postgres_url) as link:
        link.cut()
        proxy = start_proxy(tmp_path, {"OLLAMA_URL": simulator.url,
                                       "DATABASE_URL": url_through(link, postgres_url),
                                       "PROXY_AUDIT_RETRY_SECONDS": "0.5"})
        try:
            for _ in range(3):
                assert generate(proxy, user).status_code == 200
            down = status(proxy.url)
            assert down.status_code == 503
            assert down.json()["failing"] == ["database"]
            link.restore()
            assert wait_rows(postgres_url, user, 3) == 3
            assert generate(proxy, user).status_code == 200
            assert wait_rows(postgres_url, user, 4) == 4
            wait_until(lambda: status(proxy.url).status_code == 200)
        finally:
            stop_proxy(proxy)

@pytest.mark.parametrize("outage", ["cut", "blackhole"])
def test_routes_that_need_the_database_answer_503_while_it_is_down(
        simulator, postgres_url: str, tmp_path: Path, outage: str) -> None:
    user = f"u-{uuid.uuid4().hex[:8]}"
    with postgres_outage(postgres_url) as link:
        proxy = start_proxy(tmp_path, {"OLLAMA_URL": simulator.url,
                                       "DATABASE_URL": url_through(link, postgres_url),
                                       # How long a silent database may keep a caller waiting.
                                       "PROXY_DATABASE_TIMEOUT_SECONDS": "1"})
        try:
            with proxy.client() as client:
                # Pooled connections exist before the outage: reset by a cut, silent in a
                # blackhole.
                assert client.get("/api/llm/conversations", headers=auth(user)).status_code == 200
                getattr(link, outage)()
                asks = [
                    ("GET", "/api/llm/conversations", auth(user), None),
                    ("GET", "/api/llm/conversations/chat-0001", auth(user), None),
                    ("DELETE", "/api/llm/conversations/chat-0001", auth(user), None),
                    ("POST", "/api/llm/chat", auth(user),
                     {"model": "llama3.2", "context_id": "chat-0001", "stream": False,
                      "messages": [{"role": "user", "content": "hello"}]}),
                    ("POST", "/api/llm/generate", auth(user),
                     {"model": "llama3.2", "template": "greeting", "variables": {},
                      "stream": False}),
                    ("GET", "/api/admin/templates", admin_auth(), None),
                    ("GET", "/api/admin/usage", admin_auth(), None),
                    ("GET", "/api/admin/audit", admin_auth(), None),
                ]
                for method, path, headers, body in asks:
                    answer = client.request(method, path, headers=headers, json=body)
                    where = f"{method} {path}: {answer.status_code} {answer.text[:200]}"
                    assert answer.status_code == 503, where
                    assert answer.headers["content-type"] == "application/json", where
                    assert "database" in answer.json()["error"], where
                    assert int(answer.headers["retry-after"]) > 0, where
                link.restore()
                wait_until(lambda: client.get("/api/llm/conversations",
                                              headers=auth(user)).status_code == 200)
        finally:
            stop_proxy(proxy)
