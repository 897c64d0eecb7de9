"""Public health: is the proxy able to serve, and if not, which part is failing."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from proxy import __version__
from proxy.api.deps import StateDep
from proxy.core.db import database_ok
from proxy.core.errors import ProxyError
from proxy.schemas import ComponentStatus, StatusResponse, UpstreamStatus

router = APIRouter(prefix="/api/llm", tags=["status"])

CHECK_TIMEOUT_SECONDS = 3.0


@router.get(
    "/status",
    response_model=StatusResponse,
    responses={503: {"model": StatusResponse, "description": "A part is failing; see `failing`."}},
    summary="Proxy version, upstream reachability and version, database and Redis health "
            "(no auth)",
)
async def status(state: StateDep) -> JSONResponse:
    upstream = UpstreamStatus(ok=False, url=state.upstream.base_url)
    database = ComponentStatus(ok=False)
    try:
        upstream.version = await asyncio.wait_for(state.upstream.version(), CHECK_TIMEOUT_SECONDS)
        upstream.ok = True
    except TimeoutError:
        upstream.error = f"no answer within {CHECK_TIMEOUT_SECONDS:g}s"
    except ProxyError as exc:
        upstream.error = exc.message
    try:
        await asyncio.wait_for(database_ok(state.engine), CHECK_TIMEOUT_SECONDS)
        database.ok = True
    except TimeoutError:
        database.error = f"no answer within {CHECK_TIMEOUT_SECONDS:g}s"
    except Exception as exc:  # any driver error means "not ok"; the text says which
        database.error = f"{type(exc).__name__}: {exc}"[:300]
    redis: ComponentStatus | None = None
    if state.limiter.shared:
        redis = ComponentStatus(ok=False)
        try:
            await asyncio.wait_for(state.limiter.ping(), CHECK_TIMEOUT_SECONDS)
            redis.ok = True
        except TimeoutError:
            redis.error = f"no answer within {CHECK_TIMEOUT_SECONDS:g}s"
        except Exception as exc:  # any client error means "not ok"; the text says which
            redis.error = f"{type(exc).__name__}: {exc}"[:300]
    parts = [("upstream", upstream), ("database", database), ("redis", redis)]
    failing = [name for name, part in parts if part is not None and not part.ok]
    body = StatusResponse(
        status="degraded" if failing else "ok", version=__version__, upstream=upstream,
        database=database, redis=redis, failing=failing,
    )
    return JSONResponse(body.model_dump(mode="json"), status_code=503 if failing else 200)
