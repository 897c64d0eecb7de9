"""Answering with a stream (NDJSON or SSE), and noticing a caller that has gone away.

The first frame is awaited before the response starts, so an error that happens before any
output (unknown model, Ollama down, timeout) gets its real HTTP status. After that the status is
200 and a failure ends the stream with the dialect's error frame (for the proxy's own API a
`{"error", "status", "done": true}` line, as Ollama does), and a caller that leaves before the
end is audited and counted as 499.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

from fastapi import Request
from fastapi.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from proxy.api.accounting import audit_record
from proxy.core.errors import ProxyError

T = TypeVar("T")

NDJSON = "application/x-ndjson"


class ClientGone(ProxyError):
    """The caller disconnected before the answer was ready (nginx's 499)."""

    status_code = 499


async def _wait_for_disconnect(request: Request) -> None:
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return


async def until_disconnected(request: Request, awaitable: Awaitable[T]) -> T:
    """Await in the current task; if the caller disconnects first, cancel it (ClientGone).

    Starlette only notices a disconnect while streaming; for a non-streamed answer, or while
    waiting for the first token, this is what stops the upstream generation.
    """
    task = asyncio.current_task()
    assert task is not None
    watcher = asyncio.create_task(_wait_for_disconnect(request))
    watcher.add_done_callback(lambda w: w.cancelled() or task.cancel())
    try:
        return await awaitable
    except asyncio.CancelledError:
        if watcher.done() and not watcher.cancelled() and task.uncancel() == 0:
            raise ClientGone("client disconnected") from None
        raise
    finally:
        watcher.cancel()


# One encoder for every frame: `json.dumps` with options builds a new one per call.
compact_json = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode


def ndjson_line(obj: dict[str, Any]) -> bytes:
    return compact_json(obj).encode() + b"\n"


def error_line(exc: ProxyError) -> bytes:
    return ndjson_line({"error": exc.message, "status": exc.status_code, "done": True})


class AccountedStream(StreamingResponse):
    """A StreamingResponse that knows whether its body reached its end: one that did not was
    cut off by the caller going away (accounted as 499, the upstream closed at once)."""

    def __init__(self, request: Request, body: AsyncGenerator[bytes], media_type: str,
                 headers: dict[str, str]) -> None:
        super().__init__(body, media_type=media_type, headers=headers)
        self.request = request
        self.frames = body
        self.settled = False  # the body ended, well or with its error frame

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # Starlette watches for the caller leaving with an anyio task group (two tasks and
        # their cancel scopes per stream); `until_disconnected` does the same with one task.
        try:
            await until_disconnected(self.request, self.stream_response(send))
        except ClientGone:
            pass  # not settled: accounted below
        finally:
            if not self.settled:
                audit_record(self.request.scope).fail(499, "client disconnected mid-stream")
            # Starlette abandons the body where the disconnect found it; closed here, the
            # upstream generation stops before the request is accounted, not when the
            # generator happens to be collected.
            await self.frames.aclose()


async def stream_response(
    request: Request, frames: AsyncIterator[bytes], media_type: str, headers: dict[str, str],
    error_frame: Callable[[ProxyError], bytes],
) -> StreamingResponse:
    """Stream `frames`, each already encoded in the dialect's framing (NDJSON lines, SSE events).

    The first frame is awaited before the response starts, so that a failure before any output
    gets its real status; a failure after that ends the stream with `error_frame`, recorded in
    the audit row, since the status has been sent. A caller that goes away mid-stream is
    recorded as 499, as on the WebSocket.
    """
    iterator = aiter(frames)
    try:
        first = await until_disconnected(request, anext(iterator))
    except BaseException:
        await _close(iterator)
        raise

    async def body() -> AsyncGenerator[bytes]:
        try:
            yield first
            async for frame in iterator:
                yield frame
            response.settled = True
        except ProxyError as exc:
            audit_record(request.scope).fail(exc.status_code, exc.message)
            response.settled = True
            yield error_frame(exc)
        finally:
            await _close(iterator)

    response = AccountedStream(request, body(), media_type, headers)
    return response


async def ndjson_response(request: Request, lines: AsyncIterator[dict[str, Any]],
                          headers: dict[str, str]) -> StreamingResponse:
    """Stream JSON objects as NDJSON lines; a failure mid-stream ends with `error_line`."""

    async def frames() -> AsyncIterator[bytes]:
        try:
            async for line in lines:
                yield ndjson_line(line)
        finally:
            await _close(lines)

    return await stream_response(request, frames(), NDJSON, headers, error_line)


async def _close(iterator: AsyncIterator[Any]) -> None:
    aclose = getattr(iterator, "aclose", None)
    if aclose is not None:
        await aclose()
