"""Every API request, accounted once: an audit row, metrics, its limit slot given back, and
its log line (every other HTTP request gets its log line here too).

The middleware opens an AuditRecord for every HTTP request before anything else can refuse it
(so 401, 413, 422 and 429 are audited too); routes fill in who, which model, tokens and timings;
whatever way the request ends (answer, error, client gone, cancellation), `finish` runs exactly
once. Health checks, scrapes and the web page get a record too, which is given its slots back but
never written: so `audit_record` always has one to return, and an app assembled without this
middleware fails at its first request instead of silently skipping audit rows and slot releases.
WebSocket requests are accounted per request frame through the same `finish`.
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Iterable
from typing import Any

from fastapi import APIRouter
from starlette.routing import Route, WebSocketRoute
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from proxy.api.access_log import log_request, request_target
from proxy.audit.record import AuditRecord
from proxy.core.dialects import dialect_of
from proxy.core.model_names import full_model_name
from proxy.core.security import AuthError
from proxy.services.state import AppState

# Health and scrape endpoints are polled constantly; auditing them would bury the real traffic.
NOT_AUDITED = frozenset({"/api/llm/status", "/metrics"})
# Where the record lives in the ASGI scope's per-request state.
_RECORD = "audit"


def audit_record(scope: Scope) -> AuditRecord:
    """The request's audit record, opened by AccountingMiddleware for every HTTP request."""
    record: AuditRecord | None = scope.get("state", {}).get(_RECORD)
    if record is None:
        raise RuntimeError(f"no audit record for {scope.get('path')!r}: the app must run under "
                           "AccountingMiddleware, or nothing is audited and no limit slot is "
                           "given back")
    return record


def model_label(state: AppState, model: str | None) -> str:
    """One label value per model, whatever the spelling (`llama3.2` = `llama3.2:latest`)."""
    if not model:
        return "none"
    return full_model_name(model) if state.known_models.contains(model) else "unknown"


def note_auth_failure(state: AppState, record: AuditRecord, exc: AuthError) -> None:
    """Count a refused token by its reason and write the reason into the request's audit row:
    the one way every path (HTTP before the body, HTTP routes, the WebSocket) records it."""
    state.metrics.auth_failures.labels(reason=exc.reason).inc()
    record.error = f"auth: {exc.reason}: {exc.message}"[:500]


async def _release_slots(record: AuditRecord) -> None:
    for release in record.on_finish:
        await release()
    record.on_finish.clear()


async def finish(state: AppState, record: AuditRecord, status: int) -> None:
    """Close the books on one request: release slots, record metrics, queue the audit row."""
    await _release_slots(record)
    record.status = record.status_override or status
    record.duration_ms = (time.perf_counter() - record.started) * 1000
    model = model_label(state, record.model)
    m = state.metrics
    m.child(m.requests, record.endpoint, model, str(record.status), record.dialect).inc()
    m.child(m.request_duration, record.endpoint, model).observe(record.duration_ms / 1000)
    if not record.cached and record.status < 400:
        if record.ttft_ms is not None:
            m.child(m.time_to_first_token, model).observe(record.ttft_ms / 1000)
        if record.prompt_tokens:
            m.child(m.prompt_tokens, model).inc(record.prompt_tokens)
        if record.completion_tokens:
            m.child(m.generation_tokens, model).inc(record.completion_tokens)
        if record.tokens_per_second is not None:
            m.child(m.tokens_per_second, model).observe(record.tokens_per_second)
    state.audit.submit(record)
    log_request(record)


class RouteLabels:
    """The `endpoint` label of a request: the path template of the route it is for.

    Read from the routers themselves, so that it is known before routing has happened (a 401
    before the body, a 413) and can never disagree with them. A path no route has is
    "unmatched": a scanner cannot create label values.
    """

    # Paths already labelled, up to this many (a scanner's paths must not grow it for ever).
    REMEMBERED = 4096

    def __init__(self, routers: Iterable[APIRouter]) -> None:
        self.templates: list[tuple[re.Pattern[str], str]] = [
            (route.path_regex, route.path)
            for router in routers for route in router.routes
            if isinstance(route, Route | WebSocketRoute)
        ]
        self._known: dict[str, str] = {}

    def __call__(self, path: str) -> str:
        label = self._known.get(path)
        if label is not None:
            return label
        label = next((template for pattern, template in self.templates if pattern.match(path)),
                     "unmatched")
        if len(self._known) < self.REMEMBERED:
            self._known[path] = label
        return label


class AccountingMiddleware:
    def __init__(self, app: ASGIApp, route_labels: RouteLabels) -> None:
        self.app = app
        self.route_labels = route_labels

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope.get("path", "")
        scope_state: dict[str, Any] = scope.setdefault("state", {})
        client = scope.get("client")
        # The server's own id (RequestIdMiddleware), never one the caller chose: it is the
        # audit row's primary key and the concurrency slot's name.
        dialect = dialect_of(path)
        record = AuditRecord(id=scope_state.get("request_id") or str(uuid.uuid4()),
                             endpoint=path, client=client[0] if client else None,
                             correlation_id=scope_state.get("correlation_id"),
                             dialect=dialect or "llm", method=scope.get("method"),
                             target=request_target(scope))
        scope_state[_RECORD] = record
        status = 500

        async def send_accounted(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                if record.response_headers:
                    message["headers"] = [
                        *message.get("headers", []),
                        *((k.lower().encode(), v.encode())
                          for k, v in record.response_headers.items()),
                    ]
            await send(message)

        if dialect is None or path in NOT_AUDITED:
            try:
                await self.app(scope, receive, send_accounted)
            finally:
                await _release_slots(record)
                record.status = status
                record.duration_ms = (time.perf_counter() - record.started) * 1000
                log_request(record)
            return
        state: AppState = scope["app"].state.proxy

        label = self.route_labels(path)
        endpoint_gauge = state.metrics.child(state.metrics.in_flight, label)
        endpoint_gauge.inc()
        try:
            await self.app(scope, receive, send_accounted)
        finally:
            endpoint_gauge.dec()
            route = scope.get("route")
            record.endpoint = getattr(route, "path", None) or label
            await finish(state, record, status)
