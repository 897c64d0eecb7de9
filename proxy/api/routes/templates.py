"""Prompt templates for admins: list, create, show, replace, delete."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Response

from proxy.api.deps import AdminUser, StateDep
from proxy.api.routes.admin import ADMIN_ERRORS
from proxy.schemas import TEMPLATE_NAME_PATTERN, TemplateIn, TemplateList, TemplateOut
from proxy.services import templates

router = APIRouter(prefix="/api/admin/templates", tags=["admin"])

TemplateName = Annotated[str, Path(pattern=TEMPLATE_NAME_PATTERN)]


@router.get("", response_model=TemplateList, responses=ADMIN_ERRORS,
            summary="List prompt templates")
async def list_templates(state: StateDep, admin: AdminUser) -> TemplateList:
    return TemplateList(templates=await templates.list_all(state.sessions))


@router.post("", response_model=TemplateOut, status_code=201,
             responses={**ADMIN_ERRORS, 409: ADMIN_ERRORS[401]},
             summary="Create a prompt template")
async def create_template(body: TemplateIn, state: StateDep, admin: AdminUser) -> TemplateOut:
    return await templates.create(state.sessions, body, admin.sub)


@router.get("/{name}", response_model=TemplateOut, responses=ADMIN_ERRORS,
            summary="Show a prompt template")
async def get_template(name: TemplateName, state: StateDep, admin: AdminUser) -> TemplateOut:
    return await templates.get(state.sessions, name)


@router.put("/{name}", response_model=TemplateOut, responses=ADMIN_ERRORS,
            summary="Replace a prompt template")
async def put_template(name: TemplateName, body: TemplateIn, state: StateDep,
                       admin: AdminUser) -> TemplateOut:
    return await templates.update(state.sessions, name, body)


@router.delete("/{name}", status_code=204, responses=ADMIN_ERRORS,
               summary="Delete a prompt template")
async def delete_template(name: TemplateName, state: StateDep, admin: AdminUser) -> Response:
    await templates.delete(state.sessions, name)
    return Response(status_code=204)
