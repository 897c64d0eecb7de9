"""ASGI middleware: a server-made request id on every request, the bearer token checked before
any body is read (401), the request body size cap (413) and read deadline (408), JSON bodies
whatever their declared type, and security headers on every answer."""

from __future__ import annotations

import asyncio
import re
import uuid
from typing import TYPE_CHECKING

from fastapi.security.utils import get_authorization_scheme_param
from opentelemetry import trace
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from proxy.api.accounting import audit_record, note_auth_failure
from proxy.api.refusals import send_refusal
from proxy.core.dialects import is_api_path
from proxy.core.errors import ProxyError
from proxy.core.logs import request_id_var
from proxy.core.security import AuthError, Principal

if TYPE_CHECKING:
    from proxy.services.state import AppState

REQUEST_ID_HEADER = b"x-request-id"
CORRELATION_ID_HEADER = b"x-correlation-id"
# A caller's id is kept (for tracing across services) only if it is short and plain.
_CLIENT_ID = re.compile(rb"^[A-Za-z0-9._\-]{8,64}$")


class RequestIdMiddleware:
    """Name every request with an id the server makes; keep a caller's id only as a label.

    The server's id keys the audit row, the concurrency slot and the spool line, so it must be
    unique and never chosen by the caller: replaying one id would otherwise merge audit rows
    (hiding usage and cost) and share one slot among many generations. A caller's own id
    (`X-Correlation-ID`, else `X-Request-ID`, as load balancers set it) is kept as the audit row's
    non-unique `correlation_id`. Answers carry the server's id in `X-Request-ID` and echo the
    caller's in `X-Correlation-ID`. Every log line written while the request is served carries
    the server's id too (`request_id_var`, proxy/core/logs.py).
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        supplied = headers.get(CORRELATION_ID_HEADER) or headers.get(REQUEST_ID_HEADER, b"")
        correlation_id = supplied.decode() if _CLIENT_ID.match(supplied) else None
        request_id = str(uuid.uuid4())
        state = scope.setdefault("state", {})
        state["request_id"] = request_id
        state["correlation_id"] = correlation_id
        ours = [(REQUEST_ID_HEADER, request_id.encode())]
        if correlation_id is not None:
            ours.append((CORRELATION_ID_HEADER, correlation_id.encode()))

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [
                    *((k, v) for k, v in message.get("headers", [])
                      if k.lower() not in (REQUEST_ID_HEADER, CORRELATION_ID_HEADER)),
                    *ours,
                ]
            await send(message)

        # The id on the request's trace span too (a no-op when tracing is off).
        trace.get_current_span().set_attribute("llm_proxy.request_id", request_id)
        reset = request_id_var.set(request_id)
        try:
            await self.app(scope, receive, send_with_id)
        finally:
            request_id_var.reset(reset)


# The only API route that answers without a token (a health check, polled, bodyless).
PUBLIC_API_PATHS = frozenset({"/api/llm/status"})
_EARLY_PRINCIPAL = "early_principal"


def bearer_token(scope: Scope) -> str | None:
    """The bearer token of a request, read exactly as FastAPI's HTTPBearer reads it."""
    authorization = dict(scope["headers"]).get(b"authorization", b"").decode("latin-1")
    scheme, credentials = get_authorization_scheme_param(authorization)
    if not credentials or scheme.lower() != "bearer":
        return None
    return credentials


def verified_early(scope: Scope, token: str | None) -> Principal | None:
    """The caller EarlyAuthMiddleware already verified for this very token, if it did."""
    early = scope.get("state", {}).get(_EARLY_PRINCIPAL)
    if early is None or token is None or early[0] != token:
        return None
    principal: Principal = early[1]
    return principal


def _declares_body(scope: Scope) -> bool:
    headers = dict(scope["headers"])
    length = headers.get(b"content-length", b"0").strip()
    return b"transfer-encoding" in headers or not length.isdigit() or int(length) > 0


class EarlyAuthMiddleware:
    """Check the bearer token before any of the request body is read.

    FastAPI reads a body before a route's dependencies run (and the size cap below buffers it
    whole), so without this an anonymous caller could make the proxy hold up to
    PROXY_MAX_BODY_BYTES per connection, for as long as the upload takes. A missing or bad token
    is answered 401 here, audited and counted like any auth failure, with the body unread and
    the connection closed. A good one is kept with the request, and `current_user` takes it from
    there instead of verifying the token a second time.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or not is_api_path(path) or path in PUBLIC_API_PATHS:
            await self.app(scope, receive, send)
            return
        state: AppState = scope["app"].state.proxy
        token = bearer_token(scope)
        try:
            principal = await state.verifier.verify(token)
        except ProxyError as exc:  # API keys are read from the database, which may be down
            audit_record(scope).error = exc.message[:500]
            await send_refusal(scope, send, exc.status_code, exc.message,
                               [(k.lower().encode(), v.encode())
                                for k, v in exc.headers().items()],
                               code=exc.code, close=_declares_body(scope))
            return
        except AuthError as exc:
            note_auth_failure(state, audit_record(scope), exc)
            await send_refusal(
                scope, send, 401, exc.message,
                [(b"www-authenticate",
                  f'Bearer error="invalid_token", reason="{exc.reason}"'.encode())],
                code=exc.reason, close=_declares_body(scope))
            return
        scope_state = scope.setdefault("state", {})
        scope_state[_EARLY_PRINCIPAL] = (token, principal)
        # Refusals before the route runs (413, 408) are then audited with their user.
        audit_record(scope).identify(principal)
        await self.app(scope, receive, send)


class BodySizeLimitMiddleware:
    """Refuse bodies over the cap with 413, by Content-Length or by counting what arrives, and
    bodies that take longer than the read timeout to arrive with 408.

    The body is read whole (it is at most the cap) before the app sees any of it, so a chunked
    body that grows past the cap is refused outright: the app never acts on a truncated request.
    The timeout bounds the whole body, not each read, so a caller trickling a byte now and then
    cannot hold the connection (and what it has sent so far) for longer.
    """

    def __init__(self, app: ASGIApp, max_bytes: int, read_timeout: float) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.read_timeout = read_timeout

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await self._reject(scope, send)
            return
        chunks: list[bytes] = []
        received = 0
        deadline = asyncio.get_running_loop().time() + self.read_timeout
        while True:
            try:
                async with asyncio.timeout_at(deadline):
                    message = await receive()
            except TimeoutError:
                await self._too_slow(scope, send)
                return
            if message["type"] != "http.request":
                # The client went away before sending its body; let the app see that.
                await self.app(scope, replaying([message], receive), send)
                return
            chunk = message.get("body", b"")
            received += len(chunk)
            if received > self.max_bytes:
                await self._reject(scope, send)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        whole: Message = {"type": "http.request", "body": b"".join(chunks), "more_body": False}
        await self.app(scope, replaying([whole], receive), send)

    async def _reject(self, scope: Scope, send: Send) -> None:
        message = f"request body larger than {self.max_bytes} bytes (PROXY_MAX_BODY_BYTES)"
        audit_record(scope).error = message
        await send_refusal(scope, send, 413, message, [])

    async def _too_slow(self, scope: Scope, send: Send) -> None:
        message = (f"request body not received within {self.read_timeout:g} seconds "
                   f"(PROXY_BODY_READ_TIMEOUT_SECONDS)")
        audit_record(scope).error = message
        await send_refusal(scope, send, 408, message, [], close=True)


def replaying(messages: list[Message], receive: Receive) -> Receive:
    """A receive that first gives back what was already read, then reads on (disconnects)."""
    queued = list(messages)

    async def replaying_receive() -> Message:
        if queued:
            return queued.pop(0)
        return await receive()

    return replaying_receive


class JsonBodyMiddleware:
    """Treat every API request body as JSON, as Ollama does.

    `curl -d '{…}'` declares `application/x-www-form-urlencoded`; refusing that would break the
    commands people copy from Ollama's documentation. Bodies are parsed as JSON and validated
    either way, so nothing is accepted that would not be accepted as JSON.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (scope["type"] == "http" and scope["method"] in ("POST", "PUT", "PATCH")
                and is_api_path(scope["path"])):
            headers = [(k, v) for k, v in scope["headers"] if k != b"content-type"]
            headers.append((b"content-type", b"application/json"))
            scope = {**scope, "headers": headers}
        await self.app(scope, receive, send)


# The web page loads only its own files; model output is never HTML (markdown.js builds DOM
# nodes from text), so no inline script or style is ever needed.
PAGE_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
    "frame-ancestors 'none'"
)
# Where /docs and /redoc load Swagger UI's and ReDoc's files from (proxy/main.py).
DOCS_ASSETS_PATH = "/docs-assets"
# The API documentation pages: FastAPI writes each one with an inline script that starts Swagger
# UI or ReDoc (and they style themselves inline; ReDoc runs a worker from a blob), but every
# file comes from the proxy itself: nothing from elsewhere can load, a CDN included.
DOCS_POLICY = (
    "default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; worker-src 'self' blob:; connect-src 'self'; object-src 'none'; "
    "base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
COMMON_HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
    (b"permissions-policy", b"camera=(), microphone=(), geolocation=(), payment=()"),
    (b"cross-origin-opener-policy", b"same-origin"),
]


class SecurityHeadersMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope.get("path", "")
        docs = path.startswith(("/docs", "/redoc", DOCS_ASSETS_PATH))
        policy = DOCS_POLICY if docs else PAGE_POLICY

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                present = {k.lower() for k, _ in headers}
                headers += [(k, v) for k, v in COMMON_HEADERS if k not in present]
                if b"content-security-policy" not in present:
                    headers.append((b"content-security-policy", policy.encode()))
                if path == "/" or path.startswith("/static/"):
                    headers.append((b"cache-control", b"no-cache"))
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, send_with_headers)
