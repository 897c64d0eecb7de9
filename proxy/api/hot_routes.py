"""The generation routes, served without FastAPI's per-request machinery.

A generation is the proxy's hot path: every token a user waits for passes through it. FastAPI's
router tries the routes one by one, solves each route's dependencies, validates through its
own wrappers and runs the endpoint inside two more middlewares (exceptions, exit stacks):
measured (`scripts/bench`), that was a large share of the time the proxy added to a request.
`HotRoutes` is the innermost middleware: it finds the generation routes by method and path in a
dictionary and calls the very same endpoint functions, with the very same arguments FastAPI
would give them. Nothing about what a request goes through changes:

- every middleware outside it (request id, security headers, accounting and audit, the token
  check before the body, the body cap and read deadline, JSON bodies) has run, as for any route;
- the caller is the one `EarlyAuthMiddleware` verified, as `current_user` would have taken it;
- the body is parsed and validated by the route's own body model, as FastAPI does it;
- the endpoint's exceptions are answered by the app's own exception handlers.

Anything it cannot do exactly as FastAPI would is left to FastAPI: a body that is not valid JSON
or fails validation (so that the 400 or 422 is FastAPI's own), a caller not verified early. Which
routes are served here is decided when the app is built, from the routes themselves: a POST route
whose endpoint returns a `Response` and takes only the body, the request, the app state, the
caller and the request id. Any other route, or a dependency this module does not know, stays
with FastAPI (tests/proxy/fast/test_hot_routes.py checks which routes are here).
"""

from __future__ import annotations

import inspect
import json
import typing
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, FastAPI
from fastapi.routing import APIRoute
from pydantic import TypeAdapter, ValidationError
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from proxy.api.accounting import audit_record
from proxy.api.deps import current_user, get_state, request_id
from proxy.api.middleware import bearer_token, replaying, verified_early

ExceptionHandler = Callable[[Request, Any], Response | Awaitable[Response]]

# How each dependency the hot routes may take is supplied, by the function FastAPI would call.
KNOWN_DEPENDENCIES = {get_state: "state", current_user: "user", request_id: "request_id"}


@dataclass(frozen=True)
class HotRoute:
    route: APIRoute
    body_name: str
    body: TypeAdapter[Any]
    request_name: str | None
    # parameter name -> "state" | "user" | "request_id"
    supplied: tuple[tuple[str, str], ...]


def _returns_response(endpoint: Callable[..., Any]) -> bool:
    returned = typing.get_type_hints(endpoint).get("return")
    options = typing.get_args(returned) or (returned,)
    return all(isinstance(option, type) and issubclass(option, Response) for option in options)


def hot_route(route: APIRoute) -> HotRoute | None:
    """The route as `HotRoutes` serves it, or None if it must stay with FastAPI."""
    dependant = route.dependant
    if route.methods != {"POST"} or len(dependant.body_params) != 1 \
            or route.body_field is None or not _returns_response(route.endpoint):
        return None
    if dependant.path_params or dependant.query_params or dependant.header_params \
            or dependant.cookie_params or dependant.websocket_param_name \
            or dependant.response_param_name or dependant.background_tasks_param_name \
            or dependant.security_scopes_param_name or route.dependencies:
        return None
    supplied = []
    for dependency in dependant.dependencies:
        what = KNOWN_DEPENDENCIES.get(dependency.call)  # type: ignore[arg-type]
        if what is None or dependency.name is None:
            return None
        supplied.append((dependency.name, what))
    field = route.body_field
    if field.field_info.annotation is None:
        return None
    return HotRoute(route, field.name, TypeAdapter(field.field_info.annotation),
                    dependant.request_param_name, tuple(supplied))


def hot_routes(routers: Iterable[APIRouter]) -> dict[str, HotRoute]:
    """The routes `HotRoutes` serves, by path, from the routers the app includes as they are
    (no prefix or dependency added when including them: `proxy/api/router.py`)."""
    found: dict[str, HotRoute] = {}
    for router in routers:
        for route in router.routes:
            if isinstance(route, APIRoute) and (hot := hot_route(route)) is not None:
                found[route.path] = hot
    return found


class HotRoutes:
    """The innermost middleware: the generation routes, called directly (see the module)."""

    def __init__(self, app: ASGIApp, fastapi_app: FastAPI, routers: Iterable[APIRouter]
                 ) -> None:
        self.app = app
        self.fastapi_app = fastapi_app
        self.routes = hot_routes(routers)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        hot = self.routes.get(scope["path"]) if scope["type"] == "http" else None
        if hot is None or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        message = await receive()
        body = message.get("body", b"") if message["type"] == "http.request" else None
        replay = replaying([message], receive)
        user = verified_early(scope, bearer_token(scope))
        if body is None or user is None or message.get("more_body", False):
            await self.app(scope, replay, send)
            return
        try:
            value = hot.body.validate_python(json.loads(body), from_attributes=True)
        except (ValueError, RecursionError, ValidationError):  # FastAPI answers 400 or 422
            await self.app(scope, replay, send)
            return
        scope["route"] = hot.route
        scope["endpoint"] = hot.route.endpoint
        scope["path_params"] = {}
        request = Request(scope, replay, send)
        state = scope["app"].state.proxy
        arguments: dict[str, Any] = {hot.body_name: value}
        if hot.request_name is not None:
            arguments[hot.request_name] = request
        for name, what in hot.supplied:
            arguments[name] = (state if what == "state" else user if what == "user"
                               else scope["state"].get("request_id", ""))
        if any(what == "user" for _, what in hot.supplied):
            # What `current_user` does besides returning the caller.
            audit_record(scope).identify(user)
        started = False

        async def tracked_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            response: Response = await hot.route.endpoint(**arguments)
            await response(scope, replay, tracked_send)
        except Exception as exc:
            handler = self._handler(exc)
            if handler is None or started:
                raise
            answer = handler(request, exc)
            if inspect.isawaitable(answer):
                answer = await answer
            await answer(scope, replay, send)

    def _handler(self, exc: Exception) -> ExceptionHandler | None:
        """The app's handler for `exc`, looked up as Starlette does: by the exception's class,
        then each of its bases."""
        handlers = self.fastapi_app.exception_handlers
        for cls in type(exc).__mro__:
            if cls in handlers:
                handler: ExceptionHandler = handlers[cls]
                return handler
        return None

