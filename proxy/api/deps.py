"""Dependencies shared by the routes, as `Annotated` aliases."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from proxy.api.accounting import audit_record
from proxy.api.middleware import verified_early
from proxy.core.errors import Forbidden
from proxy.core.security import Principal
from proxy.services.state import AppState

bearer_scheme = HTTPBearer(auto_error=False, description="A JWT with `sub`, `role` and `exp`.")


# Dependencies are coroutines, even those that never wait: FastAPI runs a plain function in its
# thread pool, a thread hop per dependency per request.
async def get_state(request: Request) -> AppState:
    state: AppState = request.app.state.proxy
    return state


StateDep = Annotated[AppState, Depends(get_state)]


async def current_user(
    request: Request,
    state: StateDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer_scheme)],
) -> Principal:
    token = credentials.credentials if credentials else None
    # Usually verified already, before the body was read (EarlyAuthMiddleware); otherwise an
    # AuthError propagates to its handler, which answers 401 with WWW-Authenticate.
    user = verified_early(request.scope, token) or await state.verifier.verify(token)
    audit_record(request.scope).identify(user)
    return user


CurrentUser = Annotated[Principal, Depends(current_user)]


async def admin_user(user: CurrentUser) -> Principal:
    if not user.is_admin:
        raise Forbidden("this route requires the admin role")
    return user


AdminUser = Annotated[Principal, Depends(admin_user)]


async def request_id(request: Request) -> str:
    value: str = request.scope.get("state", {}).get("request_id", "")
    return value


RequestId = Annotated[str, Depends(request_id)]
