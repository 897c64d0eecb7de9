"""Every HTTP request has an audit record, and an app without the accounting middleware fails
loudly instead of skipping its audit rows and limit slots; the `endpoint` label is a route's
template. In process: no server needed."""

from __future__ import annotations

import httpx
import pytest
from starlette.types import Receive, Scope, Send

from proxy.api.accounting import AccountingMiddleware, RouteLabels, audit_record
from proxy.api.router import ROUTERS
from proxy.audit.record import AuditRecord


class RecordingApp:
    """An ASGI app that answers 204 after reading the request's audit record."""

    def __init__(self) -> None:
        self.records: list[AuditRecord] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.records.append(audit_record(scope))
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})


@pytest.mark.parametrize("path", ["/api/llm/status", "/metrics", "/", "/static/app.js"])
async def test_unaudited_requests_still_have_a_record(path: str) -> None:
    inner = RecordingApp()
    transport = httpx.ASGITransport(app=AccountingMiddleware(inner, RouteLabels(ROUTERS)))
    async with httpx.AsyncClient(transport=transport, base_url="http://proxy") as client:
        assert (await client.get(path)).status_code == 204
    (record,) = inner.records
    assert record.endpoint == path


async def test_a_record_without_the_middleware_is_an_error_not_a_skip() -> None:
    with pytest.raises(RuntimeError, match="AccountingMiddleware"):
        audit_record({"type": "http", "path": "/api/llm/generate", "state": {}})


async def test_a_slot_taken_by_an_unaudited_request_is_given_back() -> None:
    released: list[str] = []

    async def takes_a_slot(scope: Scope, receive: Receive, send: Send) -> None:
        record = audit_record(scope)

        async def release() -> None:
            released.append(record.id)

        record.on_finish.append(release)
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    transport = httpx.ASGITransport(app=AccountingMiddleware(takes_a_slot, RouteLabels(ROUTERS)))
    async with httpx.AsyncClient(transport=transport, base_url="http://proxy") as client:
        assert (await client.get("/api/llm/status")).status_code == 204
    assert len(released) == 1


@pytest.mark.parametrize(("path", "label"), [
    ("/api/llm/generate", "/api/llm/generate"),
    ("/api/admin/templates/greeting", "/api/admin/templates/{name}"),
    ("/api/admin/models/pull", "/api/admin/models/pull"),
    ("/api/admin/models/llama3.2", "/api/admin/models/{model}"),
    ("/api/llm/generate/extra", "unmatched"),
    ("/api/scan-1234", "unmatched"),
])
def test_the_endpoint_label_is_the_template_of_the_route(path: str, label: str) -> None:
    assert RouteLabels(ROUTERS)(path) == label
