"""Prompt templates: named Jinja2 templates stored in the database, rendered in a sandbox.

Rendering happens in worker processes under a time budget and an output cap
(`proxy.services.template_runner`); the sandbox and its limits are
`proxy.services.template_sandbox`. A template is checked when it is stored (syntax, and no
`include`/`import`/`extends`) and again when it is rendered, since older rows were stored
without the second check.
"""

from __future__ import annotations

from typing import Any

from jinja2 import TemplateSyntaxError
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from proxy.core.errors import NotFound, ProxyError, RequestInvalid
from proxy.core.models import PromptTemplate, utcnow
from proxy.schemas import TemplateIn, TemplateOut
from proxy.services.template_runner import TemplateRunner
from proxy.services.template_sandbox import (
    CappedSandbox,
    SourceRefused,
    check_source,
    syntax_message,
)

# Parsing only: the output cap plays no part in it.
PARSER = CappedSandbox(max_chars=0)


class TemplateExists(ProxyError):
    status_code = 409


def _out(row: PromptTemplate) -> TemplateOut:
    return TemplateOut(name=row.name, template=row.template, description=row.description,
                       created_by=row.created_by, created_at=row.created_at,
                       updated_at=row.updated_at)


def check_syntax(source: str) -> None:
    try:
        check_source(PARSER, source)
    except TemplateSyntaxError as exc:
        raise RequestInvalid(f"template {syntax_message(exc)}") from exc
    except SourceRefused as exc:
        raise RequestInvalid(f"template {exc}") from exc


async def render(factory: async_sessionmaker[AsyncSession], runner: TemplateRunner, name: str,
                 variables: dict[str, Any]) -> str:
    async with factory() as session:
        row = await session.get(PromptTemplate, name)
    if row is None:
        raise NotFound(f"template '{name}' not found")
    text = await runner.render(name, row.template, variables)
    if not text.strip():
        raise RequestInvalid(f"template '{name}' rendered an empty prompt")
    return text


async def list_all(factory: async_sessionmaker[AsyncSession]) -> list[TemplateOut]:
    async with factory() as session:
        rows = await session.scalars(select(PromptTemplate).order_by(PromptTemplate.name))
        return [_out(r) for r in rows]


async def get(factory: async_sessionmaker[AsyncSession], name: str) -> TemplateOut:
    async with factory() as session:
        row = await session.get(PromptTemplate, name)
    if row is None:
        raise NotFound(f"template '{name}' not found")
    return _out(row)


async def create(factory: async_sessionmaker[AsyncSession], body: TemplateIn,
                 author: str) -> TemplateOut:
    check_syntax(body.template)
    exists = TemplateExists(f"template '{body.name}' already exists; use PUT to change it")
    try:
        async with factory() as session, session.begin():
            if await session.get(PromptTemplate, body.name) is not None:
                raise exists
            now = utcnow()
            row = PromptTemplate(name=body.name, template=body.template,
                                 description=body.description, created_by=author,
                                 created_at=now, updated_at=now)
            session.add(row)
    except IntegrityError as exc:
        # Another request created the same name between our check and our insert.
        raise exists from exc
    return _out(row)


async def update(factory: async_sessionmaker[AsyncSession], name: str, body: TemplateIn
                 ) -> TemplateOut:
    if body.name != name:
        raise RequestInvalid("the name in the body must match the name in the path")
    check_syntax(body.template)
    async with factory() as session, session.begin():
        row = await session.get(PromptTemplate, name)
        if row is None:
            raise NotFound(f"template '{name}' not found")
        row.template, row.description, row.updated_at = body.template, body.description, utcnow()
    return _out(row)


async def delete(factory: async_sessionmaker[AsyncSession], name: str) -> None:
    async with factory() as session, session.begin():
        row = await session.get(PromptTemplate, name)
        if row is None:
            raise NotFound(f"template '{name}' not found")
        await session.delete(row)
