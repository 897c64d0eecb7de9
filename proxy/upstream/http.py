"""What every engine client shares: one connection pool per engine, with the OLLAMA_* timeouts
and limits, one JSON request whose every failure is an UpstreamError, and the lines of a
streamed answer, each within its own deadline.

A streamed generation has two waits. Before its first token the engine may be loading the
model, which can take minutes (OLLAMA_FIRST_TOKEN_TIMEOUT, counted from the request); after
that, a healthy engine sends chunk after chunk, so a long silence means it hangs
(OLLAMA_READ_TIMEOUT, between two lines). httpx has one read timeout per request, so both are
kept here, around each wait, and httpx's own read timeout is only a backstop above both.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator
from typing import Any

import httpx

from proxy.core.errors import (
    UpstreamFailed,
    UpstreamTimeout,
    error_from_upstream_response,
    map_transport_error,
)
from proxy.core.settings import Settings
from proxy.core.tracing import trace_http_client


def engine_client(settings: Settings, base_url: str, headers: dict[str, str] | None = None,
                  transport: httpx.AsyncBaseTransport | None = None) -> httpx.AsyncClient:
    client = httpx.AsyncClient(
        base_url=base_url,
        headers=headers,
        timeout=httpx.Timeout(
            connect=settings.ollama_connect_timeout,
            read=max(settings.ollama_read_timeout, settings.ollama_first_token_timeout),
            write=settings.ollama_write_timeout,
            pool=settings.ollama_pool_timeout,
        ),
        limits=httpx.Limits(
            max_connections=settings.ollama_max_connections,
            max_keepalive_connections=min(20, settings.ollama_max_connections),
        ),
        transport=transport,
        # Engines are on a private network; never pick up a host-wide proxy for them.
        trust_env=False,
    )
    trace_http_client(client, settings.proxy_otel_enabled)
    return client


async def json_request(http: httpx.AsyncClient, method: str, path: str,
                       payload: dict[str, Any] | None, model: str | None) -> Any:
    """One request, one JSON (or empty) answer; every failure raised as an UpstreamError."""
    try:
        response = await http.request(method, path, json=payload)
    except httpx.HTTPError as exc:
        raise map_transport_error(exc) from exc
    if response.status_code >= 400:
        raise error_from_upstream_response(response.status_code, response.content, model)
    if not response.content:
        return None
    try:
        return response.json()
    except ValueError as exc:
        raise UpstreamFailed("upstream answered with invalid JSON") from exc


class StreamTimer:
    """The deadlines of one streamed generation: its first token within
    OLLAMA_FIRST_TOKEN_TIMEOUT of the request, then at most OLLAMA_READ_TIMEOUT between two
    lines. The engine client calls `started()` when it has its first token."""

    def __init__(self, settings: Settings) -> None:
        self.first_token = settings.ollama_first_token_timeout
        self.gap = settings.ollama_read_timeout
        self._first_by = asyncio.get_running_loop().time() + self.first_token
        self._started = False

    def started(self) -> None:
        self._started = True

    def wait(self) -> asyncio.Timeout:
        """The deadline of the next wait on the engine."""
        if self._started:
            return asyncio.timeout(self.gap)
        return asyncio.timeout_at(self._first_by)

    def expired(self) -> UpstreamTimeout:
        if self._started:
            return UpstreamTimeout(f"upstream timed out: nothing for {self.gap:g} s mid-stream "
                                   "(OLLAMA_READ_TIMEOUT)")
        return UpstreamTimeout(f"upstream timed out: no first token within "
                               f"{self.first_token:g} s (OLLAMA_FIRST_TOKEN_TIMEOUT)")


async def streamed_lines(http: httpx.AsyncClient, path: str, body: dict[str, Any],
                         model: str | None, timer: StreamTimer) -> AsyncGenerator[str]:
    """POST `body` and yield the answer's lines as they arrive, each wait within `timer`'s
    deadline; every failure raised as an UpstreamError. Closing this generator closes the
    connection, which is how a client disconnect cancels the generation upstream."""
    try:
        async with timer.wait():
            response = await http.send(http.build_request("POST", path, json=body), stream=True)
        try:
            if response.status_code >= 400:
                async with timer.wait():
                    content = await response.aread()
                raise error_from_upstream_response(response.status_code, content, model)
            lines = response.aiter_lines()
            while True:
                try:
                    async with timer.wait():
                        line = await anext(lines)
                except StopAsyncIteration:
                    return
                yield line
        finally:
            await response.aclose()
    except TimeoutError as exc:
        raise timer.expired() from exc
    except httpx.HTTPError as exc:
        raise map_transport_error(exc) from exc
