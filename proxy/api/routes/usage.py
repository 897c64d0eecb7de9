"""Admin analytics: usage and cost per user/model/day, the audit log, prompt templates."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Response
from pydantic import BaseModel, Field
from sqlalchemy import desc

from proxy.api.deps import AdminUser, StateDep
from proxy.api.routes.admin import ADMIN_ERRORS
from proxy.core.errors import RequestInvalid
from proxy.core.models import AuditEntry
from proxy.schemas import TEMPLATE_NAME_PATTERN, TemplateIn, TemplateList, TemplateOut
from proxy.services import templates
from proxy.services.usage import GroupBy, filtered, usage

router = APIRouter(prefix="/api/admin", tags=["admin"])

Start = Annotated[datetime | None, Query(description="Inclusive, ISO 8601.")]
End = Annotated[datetime | None, Query(description="Exclusive, ISO 8601.")]
TemplateName = Annotated[str, Path(pattern=TEMPLATE_NAME_PATTERN)]


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
    rows = await usage(state.sessions, state.settings, group_by, start, end, user, model)
    totals = {k: sum(r[k] for r in rows) for k in
              ("requests", "prompt_tokens", "completion_tokens", "errors", "rate_limited",
               "cached")}
    totals["cost"] = round(sum(r["cost"] for r in rows), 6)
    s = state.settings
    return UsageReport(group_by=list(group_by), start=start, end=end, cost_mode=s.proxy_cost_mode,
                       currency=s.proxy_cost_currency, rows=rows, totals=totals)


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
    query = filtered(start, end, user, model)
    if endpoint is not None:
        query = query.where(AuditEntry.endpoint == endpoint)
    if status is not None:
        query = query.where(AuditEntry.status == status)
    if correlation_id is not None:
        query = query.where(AuditEntry.correlation_id == correlation_id)
    query = query.order_by(desc(AuditEntry.at), AuditEntry.id).offset(offset).limit(limit + 1)
    async with state.sessions() as session:
        rows = list(await session.scalars(query))
    entries = [{c.name: getattr(r, c.name) for c in AuditEntry.__table__.columns}
               for r in rows[:limit]]
    return AuditPage(entries=entries, next_offset=offset + limit if len(rows) > limit else None)


@router.get("/templates", response_model=TemplateList, responses=ADMIN_ERRORS,
            summary="List prompt templates")
async def list_templates(state: StateDep, admin: AdminUser) -> TemplateList:
    return TemplateList(templates=await templates.list_all(state.sessions))


@router.post("/templates", response_model=TemplateOut, status_code=201,
             responses={**ADMIN_ERRORS, 409: ADMIN_ERRORS[401]},
             summary="Create a prompt template")
async def create_template(body: TemplateIn, state: StateDep, admin: AdminUser) -> TemplateOut:
    return await templates.create(state.sessions, body, admin.sub)


@router.get("/templates/{name}", response_model=TemplateOut, responses=ADMIN_ERRORS,
            summary="Show a prompt template")
async def get_template(name: TemplateName, state: StateDep, admin: AdminUser) -> TemplateOut:
    return await templates.get(state.sessions, name)


@router.put("/templates/{name}", response_model=TemplateOut, responses=ADMIN_ERRORS,
            summary="Replace a prompt template")
async def put_template(name: TemplateName, body: TemplateIn, state: StateDep,
                       admin: AdminUser) -> TemplateOut:
    return await templates.update(state.sessions, name, body)


@router.delete("/templates/{name}", status_code=204, responses=ADMIN_ERRORS,
               summary="Delete a prompt template")
async def delete_template(name: TemplateName, state: StateDep, admin: AdminUser) -> Response:
    await templates.delete(state.sessions, name)
    return Response(status_code=204)
