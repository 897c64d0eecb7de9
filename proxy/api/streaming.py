"""Answering with a stream (NDJSON or SSE), and noticing a caller that has gone away.

The first frame is awaited before the response starts, so an error that happens before any
output (unknown model, Ollama down, timeout) gets its real HTTP status. After that the status is
200 and a failure ends the stream with the dialect's error frame (for the proxy's own API a
`{"error", "status", "done": true}` line, as Ollama does).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

from fastapi import Request
from fastapi.responses import StreamingResponse

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


def ndjson_line(obj: dict[str, Any]) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode() + b"\n"


def error_line(exc: ProxyError) -> bytes:
    return ndjson_line({"error": exc.message, "status": exc.status_code, "done": True})


async def stream_response(
    request: Request, frames: AsyncIterator[bytes], media_type: str, headers: dict[str, str],
    error_frame: Callable[[ProxyError], bytes],
) -> StreamingResponse:
    """Stream `frames`, each already encoded in the dialect's framing (NDJSON lines, SSE events).

    The first frame is awaited before the response starts, so that a failure before any output
    gets its real status; a failure after that ends the stream with `error_frame`, recorded in
    the audit row, since the status has been sent.
    """
    iterator = aiter(frames)
    try:
        first = await until_disconnected(request, anext(iterator))
    except BaseException:
        await _close(iterator)
        raise

    async def body() -> AsyncIterator[bytes]:
        try:
            yield first
            async for frame in iterator:
                yield frame
        except ProxyError as exc:
            audit_record(request.scope).fail(exc.status_code, exc.message)
            yield error_frame(exc)
        finally:
            await _close(iterator)

    return StreamingResponse(body(), media_type=media_type, headers=headers)


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
