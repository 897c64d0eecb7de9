"""A caller's `X-Request-ID` is a correlation label, never a key the server trusts: in process,
on SQLite and the real Postgres. (That streams sharing one id each take a concurrency slot needs
real streams: tests/proxy/test_request_identity.py.)

The server names every request itself: that name keys the audit row, the concurrency slot and
the spool line, and comes back in `X-Request-ID` and the body's `request_id`. A caller's own id
is kept only in the audit row's non-unique `correlation_id` (echoed in `X-Correlation-ID`), so
replaying one id can neither merge audit rows (hiding usage and cost) nor share one slot.
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from tests.support.proxy_app import InProcessProxy, MakeProxy
from tests.support.timing import wait_until_async
from tests.support.tokens import admin_auth, auth

pytestmark = pytest.mark.usefixtures("sim")


def fresh(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


async def admin_get(proxy: InProcessProxy, path: str, **params: Any) -> dict[str, Any]:
    response = await proxy.client.get(path, headers=admin_auth(), params=params)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


@pytest.fixture(scope="module")
async def proxy(make_proxy: MakeProxy, database_url: str) -> InProcessProxy:
    return await make_proxy(database_url=database_url)


async def test_one_client_id_on_five_requests_is_five_audited_requests(
        proxy: InProcessProxy) -> None:
    user, shared = fresh("replayer"), fresh("replayed-id")
    written = await proxy.metric("llm_proxy_audit_rows_written_total")
    responses = [
        await proxy.client.post("/api/llm/generate",
                                headers={**auth(user), "X-Request-ID": shared},
                                json={"model": "llama3.2", "prompt": "count me", "stream": False,
                                      "options": {"num_predict": 2}})
        for _ in range(5)
    ]
    assert [r.status_code for r in responses] == [200] * 5

    async def all_written() -> bool:
        return await proxy.metric("llm_proxy_audit_rows_written_total") >= written + 5

    # Every row has been through the writer (stored, or ignored as a duplicate id).
    await wait_until_async(all_written)

    report = await admin_get(proxy, "/api/admin/usage", group_by="user", user=user)
    assert report["totals"]["requests"] == 5
    entries = (await admin_get(proxy, "/api/admin/audit", user=user))["entries"]
    assert len(entries) == 5

    server_ids = [r.headers["x-request-id"] for r in responses]
    assert len(set(server_ids)) == 5 and shared not in server_ids
    assert [r.json()["request_id"] for r in responses] == server_ids
    assert {r.headers["x-correlation-id"] for r in responses} == {shared}
    assert sorted(e["id"] for e in entries) == sorted(server_ids)
    assert {e["correlation_id"] for e in entries} == {shared}
    # The correlation id is a filter of the audit log, not a key: all five share it.
    by_correlation = (await admin_get(proxy, "/api/admin/audit",
                                      correlation_id=shared))["entries"]
    assert sorted(e["id"] for e in by_correlation) == sorted(server_ids)


async def test_an_unusable_client_id_is_dropped_not_stored(proxy: InProcessProxy) -> None:
    user = fresh("odd-id")
    response = await proxy.client.get(
        "/api/llm/models", headers={**auth(user), "X-Request-ID": "has spaces; and more"})
    assert response.status_code == 200
    assert "x-correlation-id" not in response.headers

    async def row() -> list[dict[str, Any]]:
        entries: list[dict[str, Any]] = (await admin_get(proxy, "/api/admin/audit",
                                                         user=user))["entries"]
        return entries

    [entry] = await wait_until_async(row)
    assert entry["id"] == response.headers["x-request-id"]
    assert entry["correlation_id"] is None
