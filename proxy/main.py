"""The ASGI app: `proxy.main:app`. Built by `create_app`, so tests can pass their own settings."""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import FileResponse, JSONResponse, PlainTextResponse
from fastapi.staticfiles import StaticFiles
from fastapi.telemetry import TelemetryConfig
from fastapi_offline import FastAPIOffline
from starlette.exceptions import HTTPException as StarletteHTTPException

from proxy import __version__
from proxy.api.accounting import (
    AccountingMiddleware,
    RouteLabels,
    audit_record,
    note_auth_failure,
)
from proxy.api.hot_routes import HotRoutes
from proxy.api.middleware import (
    DOCS_ASSETS_PATH,
    BodySizeLimitMiddleware,
    EarlyAuthMiddleware,
    JsonBodyMiddleware,
    RequestIdMiddleware,
    SecurityHeadersMiddleware,
)
from proxy.api.refusals import refusal
from proxy.api.router import ROUTERS, api_router
from proxy.core.db import migrate_database
from proxy.core.errors import DatabaseUnavailable, ProxyError
from proxy.core.security import AuthError
from proxy.core.settings import Settings, get_settings
from proxy.core.tracing import start_tracing, trace_app
from proxy.schemas import StreamChunk, StreamDone, StreamError
from proxy.services.state import AppState

log = logging.getLogger("proxy")

STATIC_DIR = Path(__file__).resolve().parent / "static"

DESCRIPTION = """
An authenticated gateway in front of Ollama. Every route except `/api/llm/status` needs a
bearer JWT (`sub`, `role`, `exp`). Errors are `{"error": "…"}` with a meaningful status:
401 (auth, checked before any body is read), 403 (admin only), 404 (unknown model or
conversation), 408 (body too slow to arrive), 413 (body too large), 400/422 (bad input),
429 (rate or concurrency limit), 503 (Ollama unreachable or busy, or the database unreachable
on a route that needs it; with Retry-After), 504 (Ollama timed out), 502 (other upstream
failures).
"""


NO_NATIVE_TELEMETRY: TelemetryConfig = {
    "tracing": False, "metrics": False, "logs": False, "operation_spans": False}


def _validation_refusal(request: Request, exc: RequestValidationError) -> tuple[str, JSONResponse]:
    errors = exc.errors()
    if any(e.get("type") == "json_invalid" for e in errors):
        ctx = errors[0].get("ctx", {}) if errors else {}
        message = f"malformed JSON: {ctx.get('error', 'cannot parse body')}"
        return message, refusal(request, 400, message)
    if any(e.get("type") == "missing" and tuple(e.get("loc", ())) == ("body",) for e in errors):
        return "missing request body", refusal(request, 400, "missing request body")
    first = errors[0] if errors else {"loc": (), "msg": "invalid request"}
    where = ".".join(str(p) for p in first.get("loc", ()) if p != "body")
    message = f"{where}: {first.get('msg')}" if where else str(first.get("msg"))
    detail = [{"loc": list(e.get("loc", ())), "msg": e.get("msg"), "type": e.get("type")}
              for e in errors]
    message = f"invalid request: {message}"
    return message, refusal(request, 422, message, extra={"detail": detail})


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ProxyError)
    async def proxy_error(request: Request, exc: ProxyError) -> JSONResponse:
        audit_record(request.scope).error = exc.message[:500]
        return refusal(request, exc.status_code, exc.message, exc.code, headers=exc.headers())

    @app.exception_handler(AuthError)
    async def auth_error(request: Request, exc: AuthError) -> JSONResponse:
        note_auth_failure(request.app.state.proxy, audit_record(request.scope), exc)
        return refusal(
            request, 401, exc.message, exc.reason,
            headers={"WWW-Authenticate": f'Bearer error="invalid_token", reason="{exc.reason}"'},
        )

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        message, response = _validation_refusal(request, exc)
        audit_record(request.scope).error = message[:500]
        return response

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return refusal(request, exc.status_code, str(exc.detail),
                       headers=getattr(exc, "headers", None))


async def _start_migrations(settings: Settings) -> bool:
    """Migrate at startup; False (and start without the database) if it cannot be reached.
    Any other failure (a wrong password, a migration that fails) still stops the start."""
    if not settings.proxy_auto_migrate:
        return True
    try:
        await migrate_database(settings)
    except DatabaseUnavailable:
        log.warning("the database cannot be reached: serving without it (audit rows go to the "
                    "spool; routes that need it answer 503) and migrating when it returns")
        return False
    return True


async def _migrate_when_reachable(state: AppState) -> None:
    """After a start without the database: migrate as soon as it answers, then let the audit
    writer replay its spool into it."""
    retry = state.settings.proxy_audit_retry_seconds
    while True:
        await asyncio.sleep(retry)
        try:
            await migrate_database(state.settings)
        except DatabaseUnavailable:
            continue
        except Exception:  # e.g. a migration refused: said loudly, and tried again
            log.exception("migrating the database failed; retrying in %g s", retry)
            continue
        state.migrations_pending = False
        state.audit.database_ready()
        log.info("the database is back: schema migrated, spooled audit rows being replayed")
        return


async def _probe_upstream(state: AppState) -> None:
    """Keep each upstream's health, the models it serves, `upstream_up` and the known model
    names current, even with no traffic."""
    while True:
        try:
            healthy = await state.upstream.probe_all()
            state.metrics.upstream_up.set(1 if healthy else 0)
            if healthy:
                models = await state.upstream.tags()
                state.known_models.update([str(m.get("name", "")) for m in models])
        except ProxyError:
            state.metrics.upstream_up.set(0)
        await asyncio.sleep(state.settings.proxy_upstream_probe_seconds)


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        state = AppState.build(settings)
        tasks: list[asyncio.Task[None]] = []
        try:
            migrated = await _start_migrations(settings)
            state.migrations_pending = not migrated
            await state.audit.start(database_ready=migrated)
            if not migrated:
                tasks.append(asyncio.create_task(_migrate_when_reachable(state),
                                                 name="migrate-when-reachable"))
            tasks.append(asyncio.create_task(_probe_upstream(state), name="upstream-probe"))
            tasks.append(asyncio.create_task(state.budgets.keep_fresh(), name="budgets"))
            state.verifier.start()
            app.state.proxy = state
            yield
        finally:
            for task in tasks:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            await state.aclose()

    # /docs (Swagger UI) and /redoc load their scripts and styles from the proxy itself, from
    # the copies fastapi-offline packages, so that they work on a host without internet.
    # FastAPI's own telemetry is off: PROXY_OTEL_ENABLED alone decides whether the proxy is
    # traced (core/tracing.py), however the process's OpenTelemetry providers are set up.
    app = FastAPIOffline(
        title="LLM proxy", version=__version__, description=DESCRIPTION, lifespan=lifespan,
        static_url=DOCS_ASSETS_PATH, telemetry=NO_NATIVE_TELEMETRY,
    )
    _install_error_handlers(app)
    app.include_router(api_router)
    # Outermost last: request id, then accounting (so that 401s, 413s and 408s are audited),
    # then the token check (before any body is read), then the body cap and read deadline;
    # innermost, the generation routes called without FastAPI's routing (api/hot_routes.py).
    app.add_middleware(HotRoutes, fastapi_app=app, routers=ROUTERS)
    app.add_middleware(JsonBodyMiddleware)
    app.add_middleware(BodySizeLimitMiddleware, max_bytes=settings.proxy_max_body_bytes,
                       read_timeout=settings.proxy_body_read_timeout_seconds)
    app.add_middleware(EarlyAuthMiddleware)
    app.add_middleware(AccountingMiddleware, route_labels=RouteLabels(ROUTERS))
    app.add_middleware(SecurityHeadersMiddleware)
    app.add_middleware(RequestIdMiddleware)
    start_tracing(settings.proxy_otel_enabled)
    trace_app(app, settings.proxy_otel_enabled)

    @app.get("/metrics", include_in_schema=False)
    async def metrics(request: Request) -> PlainTextResponse:
        token = settings.proxy_metrics_token
        if token is None and settings.proxy_env == "production":
            return PlainTextResponse("metrics disabled: set PROXY_METRICS_TOKEN", 403)
        if token is not None:
            supplied = request.headers.get("authorization", "")
            if not hmac.compare_digest(supplied.encode(), f"Bearer {token}".encode()):
                return PlainTextResponse("a valid scrape token is required", 401,
                                         headers={"WWW-Authenticate": "Bearer"})
        state: AppState = request.app.state.proxy
        return PlainTextResponse(state.metrics.render(),
                                 media_type="text/plain; version=0.0.4; charset=utf-8")

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")

    @app.get("/", include_in_schema=False)
    async def web_page() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html", media_type="text/html")

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(title=app.title, version=app.version,
                                 description=app.description, routes=app.routes)
            components = schema.setdefault("components", {}).setdefault("schemas", {})
            for model in (StreamChunk, StreamDone, StreamError):
                definition = model.model_json_schema(ref_template="#/components/schemas/{model}")
                components.update(definition.pop("$defs", {}))
                components[model.__name__] = definition
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app


def __getattr__(name: str) -> Any:
    # `proxy.main:app` is built on first access, so importing this module for `create_app`
    # (tests, the CLI) does not read the environment.
    if name == "app":
        return create_app()
    raise AttributeError(name)
