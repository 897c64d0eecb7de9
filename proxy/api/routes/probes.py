"""Probes for orchestrators, without a token: is the process alive, is it ready for traffic.

- `GET /livez`: the process serves requests. Nothing else is checked, so a failing dependency
  never gets the proxy restarted: this is the Docker healthcheck and a liveness probe.
- `GET /readyz`: it can do its work: the database answers (and is migrated), the limiter's
  Redis answers (when REDIS_URL is set), and at least one engine is in rotation (as the
  router's probes last saw them). 503 names what is missing and nothing more; hosts, versions
  and error texts are in `/api/llm/status`, for admins. For load balancers and deployments.
"""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from proxy.api.deps import StateDep
from proxy.api.routes.status import check_part
from proxy.core.db import database_ok

router = APIRouter(tags=["probes"])


@router.get("/livez", summary="Liveness: the process serves (no dependency is checked)")
async def livez() -> dict[str, str]:
    return {"status": "ok"}


@router.get(
    "/readyz",
    summary="Readiness: database, limiter backend and at least one engine in rotation",
    responses={503: {"description": "`missing` names what is not ready."}},
)
async def readyz(state: StateDep) -> JSONResponse:
    missing = []
    database = await check_part(database_ok(state.engine))
    if not database.ok or state.migrations_pending:
        missing.append("database")
    if state.limiter.shared and not (await check_part(state.limiter.ping())).ok:
        missing.append("redis")
    if not state.upstream.in_rotation():
        missing.append("upstream")
    if missing:
        return JSONResponse({"status": "not ready", "missing": missing}, status_code=503)
    return JSONResponse({"status": "ready"})
