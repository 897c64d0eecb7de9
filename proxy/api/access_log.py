"""One log line per request (`proxy.access`), written when the request has ended.

It replaces uvicorn's access lines, which know only the client, the request line and the
status: this one also says who asked (the token's subject), for which model, in which dialect,
how long it took, and, for a generation, the time to its first token and the engine's own time.
A WebSocket generation gets a line of its own, as it gets an audit row.

The query string is kept, with every credential in it masked (`?token=***`), and no header is
ever logged: the token travels in `Authorization`, or in the WebSocket URL's query.
"""

from __future__ import annotations

import logging
from urllib.parse import quote

from starlette.types import Scope

from proxy.audit.record import AuditRecord
from proxy.core.dialects import is_api_path
from proxy.core.redact import redact_secrets

log = logging.getLogger("proxy.access")

# Polled by health checks and Prometheus every few seconds: at INFO they would bury the traffic.
POLLED_PATHS = frozenset({"/livez", "/readyz", "/metrics", "/api/llm/status"})


def request_target(scope: Scope) -> str:
    """The path and query of an HTTP request, credentials masked. The path is percent-encoded
    again (the server decoded it), so that `%0A` in a URL cannot start a forged log line."""
    query = scope.get("query_string", b"").decode("latin-1")
    path = quote(scope.get("path", ""))
    return redact_secrets(f"{path}?{query}") if query else path


def log_request(record: AuditRecord) -> None:
    """The request's line, from its finished audit record."""
    method = record.method or "WS"
    target = record.target or record.endpoint
    level = logging.DEBUG if target.partition("?")[0] in POLLED_PATHS else logging.INFO
    if not log.isEnabledFor(level):
        return
    log.log(level, "%s %s %d %.1f ms", method, target, record.status, record.duration_ms,
            extra={
                "request_id": record.id,
                "method": method,
                "path": target,
                "status": record.status,
                "duration_ms": round(record.duration_ms, 1),
                "user": record.user,
                "model": record.model,
                "dialect": record.dialect if is_api_path(record.endpoint) else None,
                "ttft_ms": None if record.ttft_ms is None else round(record.ttft_ms, 1),
                "upstream_ms": round(record.upstream_ms, 1) if record.upstream_ms else None,
                "cached": record.cached or None,
                "client": record.client,
            })
