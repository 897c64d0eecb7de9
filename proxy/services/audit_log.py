"""The audit log as admins read it: the rows of a range, filtered, newest first, in pages.

The usage report (`proxy.services.usage`) aggregates over the same selection of rows.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, NamedTuple

from sqlalchemy import Select, desc, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from proxy.core.model_names import full_model_name
from proxy.core.models import AuditEntry


def select_entries(start: datetime | None, end: datetime | None, user: str | None = None,
                   model: str | None = None) -> Select[AuditEntry]:
    """Rows from `start` (inclusive) to `end` (exclusive), of one user and one model if given."""
    query = select(AuditEntry)
    if start is not None:
        query = query.where(AuditEntry.at >= start)
    if end is not None:
        query = query.where(AuditEntry.at < end)
    if user is not None:
        query = query.where(AuditEntry.user == user)
    if model is not None:
        query = query.where(AuditEntry.model == full_model_name(model))
    return query


class AuditPage(NamedTuple):
    entries: list[dict[str, Any]]
    next_offset: int | None


async def audit_page(
    factory: async_sessionmaker[AsyncSession], *, start: datetime | None, end: datetime | None,
    user: str | None, model: str | None, endpoint: str | None, status: int | None,
    correlation_id: str | None, limit: int, offset: int,
) -> AuditPage:
    """One page of matching rows, newest first, each as a dict of its columns."""
    query = select_entries(start, end, user, model)
    if endpoint is not None:
        query = query.where(AuditEntry.endpoint == endpoint)
    if status is not None:
        query = query.where(AuditEntry.status == status)
    if correlation_id is not None:
        query = query.where(AuditEntry.correlation_id == correlation_id)
    # One row more than the page: whether it exists says whether there is a next page.
    query = query.order_by(desc(AuditEntry.at), AuditEntry.id).offset(offset).limit(limit + 1)
    async with factory() as session:
        rows = list(await session.scalars(query))
    entries = [{c.name: getattr(r, c.name) for c in AuditEntry.__table__.columns}
               for r in rows[:limit]]
    return AuditPage(entries, offset + limit if len(rows) > limit else None)
