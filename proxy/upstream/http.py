"""What every engine client shares: one connection pool per engine, with the OLLAMA_* timeouts
and limits, one JSON request whose every failure is an UpstreamError, and the lines of a
streamed answer, each within its own deadline.

A streamed generation has two waits. Before its first token the engine may be loading the
model, which can take minutes (OLLAMA_FIRST_TOKEN_TIMEOUT, counted from the request); after
that, a healthy engine sends chunk after chunk, so a long silence means it hangs
(OLLAMA_READ_TIMEOUT, between two lines). httpx has one read timeout per request, so both are
kept here, around each wait, and httpx's own read timeout is only a backstop above both. A
generation answered in one body (`stream: false`) has one wait, for the whole answer
(OLLAMA_ANSWER_TIMEOUT).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any

import httpx

from proxy.core.errors import (
    UpstreamFailed,
    UpstreamTimeout,
    error_from_upstream_response,
    map_transport_error,
)
from proxy.core.settings import Settings


def engine_client(settings: Settings, base_url: str, headers: dict[str, str] | None = None,
                  transport: httpx.AsyncBaseTransport | None = None) -> httpx.AsyncClient:
    return httpx.AsyncClient(
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


async def json_request(http: httpx.AsyncClient, method: str, path: str,
                       payload: dict[str, Any] | None, model: str | None,
                       timeout: httpx.Timeout | None = None) -> Any:
    """One request, one JSON (or empty) answer; every failure raised as an UpstreamError."""
    try:
        response = await http.request(method, path, json=payload,
                                      timeout=timeout or httpx.USE_CLIENT_DEFAULT)
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


async def whole_answer(http: httpx.AsyncClient, settings: Settings, path: str,
                       body: dict[str, Any], model: str | None) -> Any:
    """POST a generation that is answered in one body. The engine sends nothing until it has
    generated the whole answer, so there is no first token nor gap to time: the answer must
    come within OLLAMA_ANSWER_TIMEOUT (UpstreamTimeout)."""
    limit = settings.ollama_answer_timeout
    # httpx's read timeout would fire first, and would not say which setting to raise.
    timeout = httpx.Timeout(connect=http.timeout.connect, read=None, write=http.timeout.write,
                            pool=http.timeout.pool)
    try:
        async with asyncio.timeout(limit):
            return await json_request(http, "POST", path, body, model, timeout)
    except TimeoutError as exc:
        raise UpstreamTimeout(f"upstream timed out: no answer within {limit:g} s "
                              "(OLLAMA_ANSWER_TIMEOUT)") from exc


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


async def read_to_end(lines: AsyncIterator[str]) -> None:
    """Read what is left of a streamed answer once its last line is in (the body's end: for a
    chunked body, its terminating chunk). A response read to its end hands its connection back
    to the pool for the next request; one closed before would be dropped, and every request
    would pay a new connection (and leave a socket in TIME_WAIT)."""
    async for _ in lines:
        pass


async def streamed_lines(http: httpx.AsyncClient, path: str, body: dict[str, Any],
                         model: str | None, timer: StreamTimer) -> AsyncGenerator[str]:
    """POST `body` and yield the answer's lines as they arrive, each wait within `timer`'s
    deadline; every failure raised as an UpstreamError. Closing this generator before the end
    closes the connection, which is how a client disconnect cancels the generation upstream;
    the engine clients read the answer to its end (`read_to_end`) before they hand on its last
    line, so that a finished answer leaves its connection in the pool."""
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
