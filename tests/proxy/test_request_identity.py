"""A caller's `X-Request-ID` is a correlation label, never a key the server trusts.

The server names every request itself: that name keys the audit row, the concurrency slot and
the spool line, and comes back in `X-Request-ID` and the body's `request_id`. A caller's own id
is kept only in the audit row's non-unique `correlation_id` (echoed in `X-Correlation-ID`), so
replaying one id can neither merge audit rows (hiding usage and cost) nor share one slot.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.support.proxy_process import ProxyProcess, metric
from tests.support.timing import scaled, wait_until
from tests.support.tokens import admin_auth, auth

pytestmark = pytest.mark.usefixtures("sim")

REDIS = "redis://127.0.0.1:6379/0"


def fresh(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def admin_get(proxy: ProxyProcess, path: str, **params: Any) -> dict[str, Any]:
    response = httpx.get(f"{proxy.url}{path}", headers=admin_auth(), params=params,
                         timeout=scaled(30))
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


@pytest.fixture(scope="module")
def proxy(proxy_factory, simulator, database_url: str) -> ProxyProcess:
    return proxy_factory(OLLAMA_URL=simulator.url, DATABASE_URL=database_url)


def test_one_client_id_on_five_requests_is_five_audited_requests(proxy: ProxyProcess) -> None:
    user, shared = fresh("replayer"), fresh("replayed-id")
    written = metric(proxy, "llm_proxy_audit_rows_written_total")
    with proxy.client() as client:
        responses = [
            client.post("/api/llm/generate", headers={**auth(user), "X-Request-ID": shared},
                        json={"model": "llama3.2", "prompt": "count me", "stream": False,
                              "options": {"num_predict": 2}})
            for _ in range(5)
        ]
    assert [r.status_code for r in responses] == [200] * 5
    # Every row has been through the writer (stored, or ignored as a duplicate id).
    wait_until(lambda: metric(proxy, "llm_proxy_audit_rows_written_total") >= written + 5)

    report = admin_get(proxy, "/api/admin/usage", group_by="user", user=user)
    assert report["totals"]["requests"] == 5
    entries = admin_get(proxy, "/api/admin/audit", user=user)["entries"]
    assert len(entries) == 5

    server_ids = [r.headers["x-request-id"] for r in responses]
    assert len(set(server_ids)) == 5 and shared not in server_ids
    assert [r.json()["request_id"] for r in responses] == server_ids
    assert {r.headers["x-correlation-id"] for r in responses} == {shared}
    assert sorted(e["id"] for e in entries) == sorted(server_ids)
    assert {e["correlation_id"] for e in entries} == {shared}
    # The correlation id is a filter of the audit log, not a key: all five share it.
    by_correlation = admin_get(proxy, "/api/admin/audit", correlation_id=shared)["entries"]
    assert sorted(e["id"] for e in by_correlation) == sorted(server_ids)


def test_an_unusable_client_id_is_dropped_not_stored(proxy: ProxyProcess) -> None:
    user = fresh("odd-id")
    with proxy.client() as client:
        response = client.get("/api/llm/models",
                              headers={**auth(user), "X-Request-ID": "has spaces; and more"})
    assert response.status_code == 200
    assert "x-correlation-id" not in response.headers

    def row() -> list[dict[str, Any]]:
        entries: list[dict[str, Any]] = admin_get(proxy, "/api/admin/audit", user=user)["entries"]
        return entries

    [entry] = wait_until(row)
    assert entry["id"] == response.headers["x-request-id"]
    assert entry["correlation_id"] is None


@pytest.fixture(scope="module", params=["memory", "redis"])
def capped(request: pytest.FixtureRequest, proxy_factory, simulator) -> ProxyProcess:
    env = {"OLLAMA_URL": simulator.url, "PROXY_CONCURRENCY_LIMIT": "2",
           "PROXY_RATE_LIMIT": "1000/minute"}
    if request.param == "redis":
        env["REDIS_URL"] = REDIS
    return proxy_factory(**env)


@pytest.fixture
def open_streams() -> Iterator[list[tuple[httpx.Client, httpx.Response]]]:
    opened: list[tuple[httpx.Client, httpx.Response]] = []
    yield opened
    for client, response in opened:
        response.close()
        client.close()


def test_streams_sharing_one_client_id_each_take_a_slot(
    capped: ProxyProcess, sim, open_streams: list[tuple[httpx.Client, httpx.Response]]
) -> None:
    # Slow enough that every stream is still running when the next one asks for a slot: a
    # streamed answer starts (200) only once its slot is held and the first token is in.
    sim.configure(tokens_per_second=10)
    user, shared = fresh("slot-sharer"), fresh("one-slot-please")
    for _ in range(6):
        client = httpx.Client(base_url=capped.url, timeout=scaled(30))
        request = client.build_request(
            "POST", "/api/llm/generate", headers={**auth(user), "X-Request-ID": shared},
            json={"model": "llama3.2", "prompt": "long", "options": {"num_predict": 200}})
        open_streams.append((client, client.send(request, stream=True)))
    statuses = [response.status_code for _, response in open_streams]
    assert statuses == [200, 200, 429, 429, 429, 429]
    refused = open_streams[2][1]
    refused.read()
    assert "at most 2 per user" in refused.json()["error"]
