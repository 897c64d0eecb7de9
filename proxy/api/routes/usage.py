"""Admin analytics: usage and cost per user/model/day, and the audit log."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field

from proxy.api.deps import AdminUser, StateDep
from proxy.api.routes.admin import ADMIN_ERRORS
from proxy.core.errors import RequestInvalid
from proxy.services.audit_log import audit_page
from proxy.services.usage import GroupBy, usage_report

router = APIRouter(prefix="/api/admin", tags=["admin"])

Start = Annotated[datetime | None, Query(description="Inclusive, ISO 8601.")]
End = Annotated[datetime | None, Query(description="Exclusive, ISO 8601.")]


class UsageReport(BaseModel):
    group_by: list[str]
    start: datetime | None
    end: datetime | None
    cost_mode: str
    currency: str
    rows: list[dict[str, Any]] = Field(
        description="One per group: requests, prompt_tokens, completion_tokens, "
                    "mean_latency_ms, p95_latency_ms, errors, rate_limited, cached, cost.")
    totals: dict[str, Any]


class AuditPage(BaseModel):
    entries: list[dict[str, Any]]
    next_offset: int | None


def _check_range(start: datetime | None, end: datetime | None) -> None:
    if start is not None and end is not None and end <= start:
        raise RequestInvalid("`end` must be after `start`")


async def _report(state: StateDep, group_by: list[GroupBy], start: datetime | None,
                  end: datetime | None, user: str | None, model: str | None) -> UsageReport:
    _check_range(start, end)
    report = await usage_report(state.sessions, state.settings, group_by, start, end, user,
                                model)
    s = state.settings
    return UsageReport(group_by=list(group_by), start=start, end=end, cost_mode=s.proxy_cost_mode,
                       currency=s.proxy_cost_currency, rows=report.rows, totals=report.totals)


@router.get("/usage", response_model=UsageReport, responses=ADMIN_ERRORS,
            summary="Requests, tokens, latency, errors and cost, grouped")
async def get_usage(
    state: StateDep, admin: AdminUser,
    group_by: Annotated[list[GroupBy], Query()] = ["user"],  # noqa: B006 - FastAPI's idiom
    start: Start = None, end: End = None,
    user: Annotated[str | None, Query(max_length=255)] = None,
    model: Annotated[str | None, Query(max_length=200)] = None,
) -> UsageReport:
    return await _report(state, group_by, start, end, user, model)


@router.get("/costs", response_model=UsageReport, responses=ADMIN_ERRORS,
            summary="Cost per user and per model over a range")
async def get_costs(
    state: StateDep, admin: AdminUser,
    group_by: Annotated[list[GroupBy], Query()] = ["user", "model"],  # noqa: B006
    start: Start = None, end: End = None,
    user: Annotated[str | None, Query(max_length=255)] = None,
) -> UsageReport:
    return await _report(state, group_by, start, end, user, None)


@router.get("/audit", response_model=AuditPage, responses=ADMIN_ERRORS,
            summary="The audit log, newest first, filtered and paged")
async def get_audit(
    state: StateDep, admin: AdminUser,
    start: Start = None, end: End = None,
    user: Annotated[str | None, Query(max_length=255)] = None,
    model: Annotated[str | None, Query(max_length=200)] = None,
    endpoint: Annotated[str | None, Query(max_length=100)] = None,
    status: Annotated[int | None, Query(ge=100, le=599)] = None,
    correlation_id: Annotated[str | None, Query(
        max_length=64, description="The id a caller sent in X-Request-ID / X-Correlation-ID; "
                                   "several requests may share one.")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> AuditPage:
    _check_range(start, end)
    page = await audit_page(state.sessions, start=start, end=end, user=user, model=model,
                            endpoint=endpoint, status=status, correlation_id=correlation_id,
                            limit=limit, offset=offset)
    return AuditPage(entries=page.entries, next_offset=page.next_offset)
