"""`create_app`: the simulator as a Starlette ASGI app.

Plain Starlette rather than FastAPI because the simulator must answer exactly like Ollama's Go
server — `404 page not found` as text, `{"error": ...}` bodies, hand-rolled NDJSON — and
FastAPI's validation layer and default error shapes would only be in the way.
"""

from __future__ import annotations

import logging

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

from tests.support.simulator import (
    control_routes,
    embed_routes,
    generate_routes,
    ollama_routes,
    openai_routes,
)
from tests.support.simulator.config import SimulatorConfig
from tests.support.simulator.payload import ApiError
from tests.support.simulator.state import SimulatorState
from tests.support.simulator.streaming import OllamaJSONResponse

logger = logging.getLogger("tests.support.simulator")

CONTROL_PREFIX = "/__sim__/"


class RequestRecorder:
    """Counts requests per path and keeps their headers, for `/__sim__/stats`.

    Bodies are recorded by the handlers that read them: wrapping `receive` here would hide
    uvicorn's connection from the `disconnect` fault, which finds it through `receive`.
    """

    def __init__(self, app: ASGIApp, sim: SimulatorState) -> None:
        self.app = app
        self.sim = sim

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and not scope["path"].startswith(CONTROL_PREFIX):
            self.sim.stats.record_request(scope["path"], list(scope["headers"]),
                                             scope.get("client"))
        await self.app(scope, receive, send)


async def _api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return OllamaJSONResponse({"error": exc.message}, status_code=exc.status)


async def _http_error(request: Request, exc: Exception) -> Response:
    # Go's net/http and gin answer routing failures in plain text, not JSON.
    assert isinstance(exc, HTTPException)
    if exc.status_code == 405:
        return PlainTextResponse("405 method not allowed", 405, headers=exc.headers)
    if exc.status_code == 404:
        return PlainTextResponse("404 page not found", 404)
    return PlainTextResponse(exc.detail, exc.status_code, headers=exc.headers)


async def _unexpected_error(request: Request, exc: Exception) -> Response:
    logger.exception("simulator bug while handling %s", request.url.path)
    return OllamaJSONResponse({"error": f"simulator error: {exc}"}, status_code=500)


def create_app(config: SimulatorConfig | None = None) -> Starlette:
    """Build a simulator app. `app.state.sim` holds its state; `app.state.listener` is set
    by the runner when it can close and reopen the listening sockets (the `refuse` fault)."""
    sim = SimulatorState(config or SimulatorConfig())
    app = Starlette(
        routes=[
            *ollama_routes.ROUTES,
            *generate_routes.ROUTES,
            *embed_routes.ROUTES,
            *openai_routes.ROUTES,
            *control_routes.ROUTES,
        ],
        middleware=[Middleware(RequestRecorder, sim=sim)],
        exception_handlers={
            ApiError: _api_error,
            HTTPException: _http_error,
            Exception: _unexpected_error,
        },
    )
    app.state.sim = sim
    app.state.listener = None
    return app
