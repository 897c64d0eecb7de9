"""Public health: is the proxy able to serve, and if not, which part is failing.

Anyone may ask (the Docker healthcheck does, with no token), so the public answer is only
`status` and the names of the failing parts. Versions, the upstream URL and error texts name
hosts, ports and software an attacker would like to know: they are `details`, for admins only.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Annotated

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials

from proxy import __version__
from proxy.api.deps import StateDep, bearer_scheme
from proxy.core.db import database_ok
from proxy.core.errors import ProxyError
from proxy.core.redact import redact_secrets
from proxy.core.security import AuthError
from proxy.schemas import (
    ComponentStatus,
    StatusDetails,
    StatusResponse,
    UpstreamState,
    UpstreamStatus,
)
from proxy.services.state import AppState

router = APIRouter(prefix="/api/llm", tags=["status"])

CHECK_TIMEOUT_SECONDS = 3.0


async def _caller_is_admin(
    state: StateDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer_scheme)],
) -> bool:
    # A missing or bad token is not refused here: it only means the public answer.
    if credentials is None:
        return False
    try:
        user = await state.verifier.verify(credentials.credentials)
    except (AuthError, ProxyError):  # a key that cannot be looked up now: the public answer
        return False
    return user.is_admin


def _error_text(exc: BaseException) -> str:
    return redact_secrets(f"{type(exc).__name__}: {exc}")[:300]


async def _check_upstream(state: AppState) -> UpstreamStatus:
    upstream = UpstreamStatus(ok=False, url=redact_secrets(state.upstream.base_url))
    try:
        upstream.version = await asyncio.wait_for(state.upstream.version(), CHECK_TIMEOUT_SECONDS)
        upstream.ok = True
    except TimeoutError:
        upstream.error = f"no answer within {CHECK_TIMEOUT_SECONDS:g}s"
    except ProxyError as exc:
        upstream.error = redact_secrets(exc.message)
    return upstream


async def check_part(probe: Awaitable[object]) -> ComponentStatus:
    """A backend's health: ok when `probe` answers in time; else why not, credentials removed."""
    part = ComponentStatus(ok=False)
    try:
        await asyncio.wait_for(probe, CHECK_TIMEOUT_SECONDS)
        part.ok = True
    except TimeoutError:
        part.error = f"no answer within {CHECK_TIMEOUT_SECONDS:g}s"
    except Exception as exc:  # any driver or client error means "not ok"; the text says which
        part.error = _error_text(exc)
    return part


@router.get(
    "/status",
    response_model=StatusResponse,
    responses={503: {"model": StatusResponse, "description": "A part is failing; see `failing`."}},
    summary="Health: ok or degraded and the failing parts (no auth); versions, upstream and "
            "error details with an admin token",
)
async def status(state: StateDep, admin: Annotated[bool, Depends(_caller_is_admin)]
                 ) -> JSONResponse:
    upstream = await _check_upstream(state)
    database = await check_part(database_ok(state.engine))
    if database.ok and state.migrations_pending:
        database = ComponentStatus(ok=False, error="reachable again; the schema is being "
                                   "migrated (the database was down at startup)")
    redis = await check_part(state.limiter.ping()) if state.limiter.shared else None
    parts = [("upstream", upstream), ("database", database), ("redis", redis)]
    failing = [name for name, part in parts if part is not None and not part.ok]
    body = StatusResponse(status="degraded" if failing else "ok", failing=failing)
    content = body.model_dump(mode="json", exclude={"details"})
    if admin:
        details = StatusDetails(version=__version__, upstream=upstream, database=database,
                                redis=redis, upstreams=[UpstreamState(**u)
                                                        for u in state.upstream.status()])
        content["details"] = details.model_dump(mode="json")
    return JSONResponse(content, status_code=503 if failing else 200)
