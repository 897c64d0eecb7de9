"""Audit retention: rows older than `PROXY_AUDIT_RETENTION_DAYS` are deleted; 0 keeps them all.

Every request writes a row, unauthenticated ones included, so without a limit the table (and
what it says about who asked what) only grows. The running proxy prunes every
`PROXY_AUDIT_PRUNE_INTERVAL_SECONDS` (first at startup); `python -m proxy prune-audit` prunes
once. Rows go in batches, each its own short transaction, so a large first prune never holds a
long lock on the table that the audit writer is inserting into. Several replicas pruning at the
same time is harmless: a row is deleted once, whoever gets there first.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime, timedelta

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncEngine

from proxy.core.models import AuditEntry
from proxy.core.settings import Settings

log = logging.getLogger("proxy.audit")

PRUNE_BATCH = 5000


def retention_cutoff(days: int, now: datetime | None = None) -> datetime:
    return (now or datetime.now(UTC)) - timedelta(days=days)


async def prune_audit(engine: AsyncEngine, days: int, now: datetime | None = None) -> int:
    """Delete the audit rows older than `days` days; return how many went. `days` must be > 0."""
    if days <= 0:
        raise ValueError("retention must be at least one day (0 means keep every row)")
    cutoff = retention_cutoff(days, now)
    deleted = 0
    while True:
        batch = select(AuditEntry.id).where(AuditEntry.at < cutoff).limit(PRUNE_BATCH)
        async with engine.begin() as connection:
            result = await connection.execute(
                delete(AuditEntry).where(AuditEntry.id.in_(batch.scalar_subquery())))
        count = max(result.rowcount or 0, 0)
        deleted += count
        if count < PRUNE_BATCH:
            return deleted


async def prune_periodically(engine: AsyncEngine, settings: Settings) -> None:
    """The running proxy's retention job: prune now, then every prune interval, until cancelled."""
    days = settings.proxy_audit_retention_days
    while True:
        try:
            deleted = await prune_audit(engine, days)
            if deleted:
                log.info("deleted %d audit rows older than %d days (PROXY_AUDIT_RETENTION_DAYS)",
                         deleted, days)
        except Exception as exc:  # the database may be down; the next round tries again
            log.warning("audit retention could not prune (%s: %s); retrying in %g s",
                        type(exc).__name__, str(exc)[:200],
                        settings.proxy_audit_prune_interval_seconds)
        await asyncio.sleep(settings.proxy_audit_prune_interval_seconds)
