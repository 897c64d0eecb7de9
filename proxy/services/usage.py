"""Usage analytics and cost over the audit log.

Aggregation happens in Python over the rows of the requested range, the same on SQLite and
Postgres (p95 needs the individual latencies anyway). Cost is computed at query time from the
cost model in settings, identically for streamed and non-streamed requests because both store
tokens and upstream time the same way; answers served from the cache cost nothing.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime
from typing import Any, Literal, NamedTuple, Protocol

from sqlalchemy import Select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from proxy.core.model_names import full_model_name
from proxy.core.models import AuditEntry
from proxy.core.settings import Settings
from proxy.services.audit_log import select_entries

GroupBy = Literal["user", "model", "day", "endpoint"]
SECONDS_PER_MONTH = 30 * 24 * 3600
MAX_ROWS = 1_000_000


def _percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * q // 100))  # nearest-rank, ceil without floats
    return ordered[int(rank) - 1]


def _key(entry: AuditEntry, group_by: list[GroupBy]) -> tuple[str, ...]:
    parts = []
    for part in group_by:
        if part == "day":
            parts.append(entry.at.date().isoformat())
        else:
            parts.append(getattr(entry, part) or "-")
    return tuple(parts)


async def _entries(factory: async_sessionmaker[AsyncSession], query: Select[AuditEntry]
                   ) -> list[AuditEntry]:
    async with factory() as session:
        return list(await session.scalars(query.limit(MAX_ROWS)))


class Costed(Protocol):
    """What a cost is computed from: an audit row, or the record of a request being finished."""

    cached: bool
    upstream_ms: float
    model: str | None
    prompt_tokens: int
    completion_tokens: int


class CostModel:
    """The cost model in settings, resolved once per report rather than once per row."""

    def __init__(self, settings: Settings) -> None:
        self.mode = settings.proxy_cost_mode
        self.per_second = (settings.proxy_cost_gpu_hour / 3600
                           + settings.proxy_cost_hardware_month / SECONDS_PER_MONTH)
        # Keys as the audit log stores models (`llama3.2` prices `llama3.2:latest`).
        self.prices = {("*" if name == "*" else full_model_name(name)): price
                       for name, price in settings.proxy_cost_per_1k_tokens.items()}

    def cost(self, entry: Costed) -> float:
        if entry.cached:
            return 0.0
        if self.mode == "gpu_time":
            return entry.upstream_ms / 1000 * self.per_second
        price = self.prices.get(full_model_name(entry.model or "")) or self.prices.get("*") or {}
        return (entry.prompt_tokens * price.get("prompt", 0.0)
                + entry.completion_tokens * price.get("completion", 0.0)) / 1000


async def usage(factory: async_sessionmaker[AsyncSession], settings: Settings,
                group_by: list[GroupBy], start: datetime | None, end: datetime | None,
                user: str | None, model: str | None) -> list[dict[str, Any]]:
    costs = CostModel(settings)
    groups: dict[tuple[str, ...], list[AuditEntry]] = defaultdict(list)
    for entry in await _entries(factory, select_entries(start, end, user, model)):
        groups[_key(entry, group_by)].append(entry)
    rows = []
    for key, entries in sorted(groups.items()):
        latencies = [e.duration_ms for e in entries if e.status < 400]
        labels: dict[str, Any] = dict(zip(group_by, key, strict=True))
        rows.append({
            **labels,
            "requests": len(entries),
            "prompt_tokens": sum(e.prompt_tokens for e in entries),
            "completion_tokens": sum(e.completion_tokens for e in entries),
            "mean_latency_ms": round(sum(latencies) / len(latencies), 3) if latencies else None,
            "p95_latency_ms": _percentile(latencies, 95),
            "errors": sum(1 for e in entries if e.status >= 400 and e.status != 429),
            "rate_limited": sum(1 for e in entries if e.status == 429),
            "cached": sum(1 for e in entries if e.cached),
            "cost": round(sum(costs.cost(e) for e in entries), 6),
        })
    return rows


# The columns of a usage row that add up over rows (latencies do not).
SUMMED = ("requests", "prompt_tokens", "completion_tokens", "errors", "rate_limited", "cached")


class Usage(NamedTuple):
    rows: list[dict[str, Any]]
    totals: dict[str, Any]


async def usage_report(factory: async_sessionmaker[AsyncSession], settings: Settings,
                       group_by: list[GroupBy], start: datetime | None, end: datetime | None,
                       user: str | None, model: str | None) -> Usage:
    """The usage rows and their totals."""
    rows = await usage(factory, settings, group_by, start, end, user, model)
    totals: dict[str, Any] = {k: sum(r[k] for r in rows) for k in SUMMED}
    totals["cost"] = round(sum(r["cost"] for r in rows), 6)
    return Usage(rows, totals)
