"""What every engine client shares: its connection pools, with the OLLAMA_* timeouts and limits,
one JSON request whose every failure is an UpstreamError, and the generations: the lines of a
streamed answer, each within its own deadline, or one whole answer.

Two HTTP clients, each where it serves best. Generations, the hot path, go through aiohttp
(`RelayClient`): measured against the simulator, one request, one connection kept alive, aiohttp
spends about 0.7 ms less per request than httpx, non-streamed and streamed alike
(`scripts/bench --http-clients`; docs/benchmarks.md), and the target is at most 1 ms added by
the whole proxy. Everything else (model lists, `/api/show`, embeddings, probes) stays on httpx,
whose `MockTransport` the tests use to drive every failure.

A streamed generation has two waits. Before its first token the engine may be loading the
model, which can take minutes (OLLAMA_FIRST_TOKEN_TIMEOUT, counted from the request); after
that, a healthy engine sends chunk after chunk, so a long silence means it hangs
(OLLAMA_READ_TIMEOUT, between two lines). Both are kept here, around each wait; the client's
own timeouts cover only getting a connection. A generation answered in one body
(`stream: false`) has one wait, for the whole answer (OLLAMA_ANSWER_TIMEOUT).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any

import aiohttp
import httpx
from yarl import URL

from proxy.core.errors import (
    UpstreamFailed,
    UpstreamTimeout,
    error_from_upstream_response,
    map_relay_error,
    map_transport_error,
)
from proxy.core.settings import Settings
from proxy.core.tracing import relay_trace_configs, trace_http_client


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


# aiohttp's message when a request could not be written: the engine never received it.
UNSENT_REQUEST = "Can not write request body"


class RelayClient:
    """The aiohttp session generations go through, one per engine: made on first use (a session
    belongs to the event loop it was made in), closed with the engine."""

    def __init__(self, settings: Settings, base_url: str,
                 headers: dict[str, str] | None = None) -> None:
        self.base_url = base_url
        self._settings = settings
        self._headers = headers or {}
        self._session: aiohttp.ClientSession | None = None
        self._urls: dict[str, URL] = {}

    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            s = self._settings
            self._session = aiohttp.ClientSession(
                headers=self._headers,
                connector=aiohttp.TCPConnector(limit=s.ollama_max_connections, limit_per_host=0),
                # `connect` is the wait for a pooled connection plus making a new one; the reads
                # are timed per wait (StreamTimer) or per answer (OLLAMA_ANSWER_TIMEOUT).
                timeout=aiohttp.ClientTimeout(
                    total=None, connect=s.ollama_pool_timeout + s.ollama_connect_timeout,
                    sock_connect=s.ollama_connect_timeout),
                # Engines are on a private network; never pick up a host-wide proxy for them.
                trust_env=False,
                # One session serves every user: a cookie an engine set must never travel
                # with another user's request (and keeping none saves work on each request).
                cookie_jar=aiohttp.DummyCookieJar(),
                trace_configs=relay_trace_configs(s.proxy_otel_enabled),
            )
        return self._session

    def url(self, path: str) -> URL:
        """The engine's URL for `path`, parsed once (aiohttp would parse the string each time)."""
        url = self._urls.get(path)
        if url is None:
            url = self._urls[path] = URL(self.base_url + path)
        return url

    async def post(self, path: str, body: dict[str, Any]) -> aiohttp.ClientResponse:
        """POST `body`; the response once its head is in.

        Sent once more, on another connection, if a kept-alive one turns out to be closed
        before any answer began: an engine may close its end right after an answer
        (llama-server does after a stream, while its headers say keep-alive), and a request
        that follows at once can find the connection half-gone. A connection refused, or any
        failure once the answer has begun, is not retried here, nor an engine that took the
        request and dropped the connection without answering: it may have been working on it.
        aiohttp says the request was not written with ClientConnectionResetError (the
        connection was closing before it) or, once the body is under way, only by a message
        (UNSENT_REQUEST); the test of an engine that closes after each answer fails if that
        changes."""
        try:
            return await self.session().post(self.url(path), json=body)
        except (aiohttp.ClientConnectionResetError, aiohttp.ClientOSError) as exc:
            unsent = isinstance(exc, aiohttp.ClientConnectionResetError) or \
                UNSENT_REQUEST in str(exc)
            if isinstance(exc, aiohttp.ClientConnectorError) or not unsent:
                raise
            return await self.session().post(self.url(path), json=body)

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


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


async def whole_answer(relay: RelayClient, settings: Settings, path: str,
                       body: dict[str, Any], model: str | None) -> Any:
    """POST a generation that is answered in one body. The engine sends nothing until it has
    generated the whole answer, so there is no first token nor gap to time: the answer must
    come within OLLAMA_ANSWER_TIMEOUT (UpstreamTimeout). Cancelled (the client went away), the
    half-read connection is closed, which is how the engine learns to stop."""
    limit = settings.ollama_answer_timeout
    try:
        async with asyncio.timeout(limit):
            async with await relay.post(path, body) as response:
                status, content = response.status, await response.read()
    except aiohttp.ClientError as exc:  # before TimeoutError: aiohttp's timeouts are both
        raise map_relay_error(exc) from exc
    except TimeoutError as exc:
        raise UpstreamTimeout(f"upstream timed out: no answer within {limit:g} s "
                              "(OLLAMA_ANSWER_TIMEOUT)") from exc
    if status >= 400:
        raise error_from_upstream_response(status, content, model)
    try:
        return json.loads(content)
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


async def read_to_end(lines: AsyncIterator[str]) -> None:
    """Read what is left of a streamed answer once its last line is in (the body's end: for a
    chunked body, its terminating chunk). A response read to its end hands its connection back
    to the pool for the next request; one closed before would be dropped, and every request
    would pay a new connection (and leave a socket in TIME_WAIT)."""
    async for _ in lines:
        pass


async def streamed_lines(relay: RelayClient, path: str, body: dict[str, Any],
                         model: str | None, timer: StreamTimer) -> AsyncGenerator[str]:
    """POST `body` and yield the answer's lines as they arrive, each wait within `timer`'s
    deadline; every failure raised as an UpstreamError. Closing this generator before the end
    closes the connection, which is how a client disconnect cancels the generation upstream;
    the engine clients read the answer to its end (`read_to_end`) before they hand on its last
    line, so that a finished answer leaves its connection in the pool."""
    response: aiohttp.ClientResponse | None = None
    finished = False
    try:
        async with timer.wait():
            response = await relay.post(path, body)
        if response.status >= 400:
            async with timer.wait():
                content = await response.read()
            raise error_from_upstream_response(response.status, content, model)
        # Lines are split here rather than by aiohttp's readline, which refuses a line longer
        # than its buffer (64 KiB): Ollama's final line carries the whole token context.
        chunks = response.content.iter_any()
        rest = b""
        while True:
            try:
                async with timer.wait():
                    chunk = await anext(chunks)
            except StopAsyncIteration:
                break
            *lines, rest = (rest + chunk).split(b"\n")
            for line in lines:
                yield line.rstrip(b"\r").decode()
        finished = True
        if rest:
            yield rest.decode()
    except aiohttp.ClientError as exc:  # before TimeoutError: aiohttp's timeouts are both
        raise map_relay_error(exc) from exc
    except TimeoutError as exc:
        raise timer.expired() from exc
    finally:
        if response is not None:
            # Read to its end, the connection goes back to the pool; otherwise it is closed.
            if finished:
                response.release()
            else:
                response.close()
