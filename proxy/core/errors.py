"""The proxy's exception tree and the one place that turns upstream failures into HTTP answers.

    ProxyError                      status, message -> {"error": message}
    ├── NotFound                    404  (a conversation that is not yours, an unknown id)
    ├── Forbidden                   403  (a user calling an admin route)
    ├── Conflict                    409  (a name taken, a user already in another team)
    ├── RequestInvalid              422  (limits that depend on settings)
    ├── QuotaExceeded               429  a token limit or a budget is spent until its reset
    ├── DatabaseUnavailable         503  the database cannot be reached or did not answer in
    │                                    time (raised by proxy/core/db.py's engine)
    └── UpstreamError               something went wrong talking to Ollama
        ├── UpstreamUnavailable     503  could not connect, or Ollama's queue is full
        ├── UpstreamTimeout         504  connect/read/write/pool timeout
        ├── ModelNotFound           404  Ollama does not have the model (named in the message)
        ├── UpstreamRejected        4xx  Ollama refused the request; its status is kept
        └── UpstreamFailed          502  Ollama answered 5xx, broke the protocol, or failed
                                         mid-stream

`map_transport_error` and `error_from_upstream_response` are the only functions that know about
httpx's exceptions and Ollama's error bodies; a test proves each branch. The database engine
(`proxy/core/db.py`) is the only place that turns a driver's connection failures into
`DatabaseUnavailable`.
"""

from __future__ import annotations

import json
import math
import time
from datetime import UTC, datetime

import aiohttp
import httpx


class ProxyError(Exception):
    status_code = 500
    # A short machine-readable reason, for the dialects whose error bodies carry one (OpenAI's
    # `code`); None where the status says it all.
    code: str | None = None

    def __init__(self, message: str, status_code: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        if status_code is not None:
            self.status_code = status_code

    def headers(self) -> dict[str, str]:
        return {}


class NotFound(ProxyError):
    status_code = 404


class Forbidden(ProxyError):
    status_code = 403


class Conflict(ProxyError):
    status_code = 409


class RequestInvalid(ProxyError):
    status_code = 422


class QuotaExceeded(ProxyError):
    """A token limit or a budget is spent until `reset_at` (epoch seconds).

    429 rather than 402: every client treats 429 as "come back later" and reads Retry-After
    (OpenAI itself answers a spent quota with 429 `insufficient_quota`), while 402 is reserved
    by HTTP and clients take it as a failure of their own.
    """

    status_code = 429

    def __init__(self, message: str, reset_at: float, code: str) -> None:
        resets = datetime.fromtimestamp(reset_at, UTC).isoformat(timespec="seconds")
        super().__init__(f"{message}; it resets at {resets}")
        self.reset_at = reset_at
        self.code = code

    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(max(1, math.ceil(self.reset_at - time.time()))),
                "X-Quota-Reset": str(math.ceil(self.reset_at))}


class DatabaseUnavailable(ProxyError):
    """Said to callers without the driver's text, which names hosts and ports."""

    status_code = 503

    def __init__(self, message: str = "database unavailable; try again shortly") -> None:
        super().__init__(message)

    def headers(self) -> dict[str, str]:
        return {"Retry-After": "5"}


class UpstreamError(ProxyError):
    status_code = 502


class UpstreamUnavailable(UpstreamError):
    status_code = 503

    def headers(self) -> dict[str, str]:
        return {"Retry-After": "5"}


class UpstreamTimeout(UpstreamError):
    status_code = 504


class ModelNotFound(UpstreamError):
    status_code = 404
    code = "model_not_found"

    def __init__(self, model: str) -> None:
        super().__init__(f"model '{model}' not found")
        self.model = model


class UpstreamRejected(UpstreamError):
    """An upstream 4xx other than an unknown model: the status is passed through."""


class UpstreamFailed(UpstreamError):
    status_code = 502


def map_transport_error(exc: httpx.HTTPError) -> UpstreamError:
    """Map an httpx failure (no usable HTTP answer) to the proxy's error."""
    if isinstance(exc, httpx.TimeoutException):
        kind = type(exc).__name__.removesuffix("Timeout").lower() or "request"
        return UpstreamTimeout(f"upstream timed out ({kind} timeout)")
    if isinstance(exc, httpx.ConnectError):
        return UpstreamUnavailable("upstream unavailable: cannot connect to Ollama")
    if isinstance(exc, httpx.RemoteProtocolError | httpx.ReadError | httpx.WriteError):
        return UpstreamFailed("upstream closed the connection unexpectedly")
    return UpstreamFailed(f"upstream request failed: {type(exc).__name__}")


def map_relay_error(exc: aiohttp.ClientError) -> UpstreamError:
    """Map an aiohttp failure (the generations' client: no usable HTTP answer) to the proxy's
    error, as `map_transport_error` does for httpx."""
    if isinstance(exc, aiohttp.ServerTimeoutError):
        kind = "connect" if isinstance(exc, aiohttp.ConnectionTimeoutError) else "read"
        return UpstreamTimeout(f"upstream timed out ({kind} timeout)")
    if isinstance(exc, aiohttp.ClientConnectorError):
        return UpstreamUnavailable("upstream unavailable: cannot connect to Ollama")
    if isinstance(exc, aiohttp.ServerDisconnectedError | aiohttp.ClientPayloadError
                  | aiohttp.ClientOSError):
        return UpstreamFailed("upstream closed the connection unexpectedly")
    return UpstreamFailed(f"upstream request failed: {type(exc).__name__}")


def upstream_error_text(body: bytes) -> str:
    """Ollama's error text from a body that should be `{"error": "..."}`."""
    try:
        parsed = json.loads(body)
    except ValueError:
        return body.decode("utf-8", "replace").strip()[:500] or "no error text"
    if isinstance(parsed, dict) and isinstance(parsed.get("error"), str):
        return str(parsed["error"])
    return body.decode("utf-8", "replace").strip()[:500]


def error_from_upstream_response(status: int, body: bytes, model: str | None) -> UpstreamError:
    """Map a non-2xx answer from Ollama to the proxy's error."""
    text = upstream_error_text(body)
    if status == 404 and model is not None:
        return ModelNotFound(model)
    if status == 503:
        return UpstreamUnavailable(f"upstream busy: {text}")
    if 400 <= status < 500:
        return UpstreamRejected(f"upstream rejected the request: {text}", status_code=status)
    return UpstreamFailed(f"upstream error ({status}): {text}")
