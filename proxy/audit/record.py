"""What is recorded about one request, filled in as the request goes along."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from typing import Any

from proxy.core.security import Principal

# String columns of `audit_log` and their sizes (proxy/core/models.py).
COLUMN_LIMITS = {"id": 64, "correlation_id": 64, "user": 255, "role": 16, "client": 64,
                 "endpoint": 100, "dialect": 16, "api_key_id": 32, "team": 64, "model": 200,
                 "prompt_sha256": 64, "error": 500}


@dataclass
class AuditRecord:
    # `id` is the server's own, unique name for the request; `correlation_id` is whatever id the
    # caller sent, kept for tracing only: many rows may share it, so nothing may be keyed on it.
    id: str
    endpoint: str
    client: str | None = None
    correlation_id: str | None = None
    at: datetime = field(default_factory=lambda: datetime.now(UTC))
    user: str | None = None
    role: str | None = None
    model: str | None = None
    prompt_chars: int = 0
    prompt_sha256: str | None = None
    prompt_text: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    ttft_ms: float | None = None
    duration_ms: float = 0.0
    upstream_ms: float = 0.0
    status: int = 0
    error: str | None = None
    cached: bool = False
    # The API dialect the request was made in: llm (the proxy's own), openai or ollama.
    dialect: str = "llm"
    # The proxy-managed API key the request was made with: its id, never its secret.
    api_key_id: str | None = None
    # The team the caller belonged to when the request was admitted (its budget was charged).
    team: str | None = None
    # Not stored: bookkeeping for the request in progress.
    started: float = field(default_factory=time.perf_counter, repr=False)
    status_override: int | None = field(default=None, repr=False)
    on_finish: list[Callable[[], Awaitable[None]]] = field(default_factory=list, repr=False)
    response_headers: dict[str, str] = field(default_factory=dict, repr=False)
    tokens_per_second: float | None = field(default=None, repr=False)
    # For the request's log line: the HTTP method and the path with its query (credentials
    # masked); None for a WebSocket generation, which is one frame of a connection.
    method: str | None = field(default=None, repr=False)
    target: str | None = field(default=None, repr=False)

    def identify(self, caller: Principal) -> None:
        """Name the caller: the user, their role, and the API key they used, if any."""
        self.user, self.role = caller.sub, caller.role
        self.api_key_id = caller.key.id if caller.key is not None else None

    def set_prompt(self, text: str, keep_text: bool) -> None:
        self.prompt_chars = len(text)
        self.prompt_sha256 = hashlib.sha256(text.encode()).hexdigest()
        self.prompt_text = text if keep_text else None

    def fail(self, status: int, error: str) -> None:
        """Record a failure that happened after the HTTP status was sent (mid-stream)."""
        self.status_override = status
        self.error = error[:500]

    def row(self) -> dict[str, Any]:
        # Every stored field is a plain value: a shallow copy is the row (`asdict` would
        # deep-copy the bookkeeping too, a measurable cost per request).
        data = {name: getattr(self, name) for name in STORED_FIELDS}
        # Whatever a caller managed to put into a field, the row must fit its column: a row
        # the database refuses would otherwise be retried forever.
        for key, limit in COLUMN_LIMITS.items():
            value = data.get(key)
            if isinstance(value, str):
                data[key] = value.replace("\x00", "")[:limit]
        if isinstance(data.get("prompt_text"), str):
            data["prompt_text"] = data["prompt_text"].replace("\x00", "")
        return data

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> AuditRecord:
        data = dict(row)
        if isinstance(data.get("at"), str):
            data["at"] = datetime.fromisoformat(data["at"])
        return cls(**data)


# The fields that are columns of `audit_log`; the rest is bookkeeping for the request.
NOT_STORED = frozenset({"started", "status_override", "on_finish", "response_headers",
                        "tokens_per_second", "method", "target"})
STORED_FIELDS = tuple(f.name for f in fields(AuditRecord) if f.name not in NOT_STORED)
