"""ASGI responses that notice when the client goes away, and Ollama's NDJSON framing.

Starlette's StreamingResponse only learns of a disconnect at its next write (with ASGI spec
2.4) and leaves closing the iterator to the garbage collector, so a generation sleeping
between tokens would neither stop nor be counted as cancelled in time. `WatchedResponse` runs
the producer next to a task that waits for `http.disconnect` and cancels the producer the
moment it arrives, so the producer's `finally` runs right away — that is what
`/__sim__/stats`' `cancelled` counter relies on.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from starlette.responses import JSONResponse, Response
from starlette.types import Receive, Scope, Send

NDJSON = "application/x-ndjson"
JSON = "application/json; charset=utf-8"  # what Ollama's gin c.JSON() sends


_GO_ESCAPES = str.maketrans(
    {"<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "\u2028": "\\u2028", "\u2029": "\\u2029"}
)


def go_json(payload: Any) -> str:
    """Compact JSON as Go's json.Marshal writes it: no spaces, UTF-8 kept as is, and `<`, `>`,
    `&`, U+2028 and U+2029 escaped (Go escapes them for HTML safety by default)."""
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":")).translate(_GO_ESCAPES)


def dumps(payload: Any) -> bytes:
    """`go_json` as bytes."""
    return go_json(payload).encode()


class OllamaJSONResponse(JSONResponse):
    """A single JSON reply with Ollama's content type and Go's encoding."""

    media_type = JSON

    def render(self, content: Any) -> bytes:
        return dumps(content)


async def wait_for_disconnect(receive: Receive) -> None:
    """Return once the client has gone (or the response is complete)."""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return


async def send_json(send: Send, status: int, payload: Any) -> None:
    """Send a whole `application/json` response through raw ASGI."""
    body = dumps(payload)
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", JSON.encode()),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body, "more_body": False})


class NDJSONWriter:
    """Writes one JSON object per line; headers go out with the first line, as in Ollama.

    Ollama's handlers only write the status line when the first chunk is ready, so a client
    sees no headers during model load and prompt evaluation; the simulator keeps that.
    """

    def __init__(self, send: Send) -> None:
        self._send = send
        self.started = False

    async def line(self, payload: Any, *, last: bool = False) -> None:
        if not self.started:
            self.started = True
            await self._send(
                {
                    "type": "http.response.start",
                    "status": 200,
                    "headers": [(b"content-type", NDJSON.encode())],
                }
            )
        await self._send(
            {"type": "http.response.body", "body": dumps(payload) + b"\n", "more_body": not last}
        )


class WatchedResponse(Response):
    """A response whose `produce` is cancelled as soon as the client disconnects."""

    def __init__(self) -> None:
        super().__init__(content=None, status_code=200)

    async def produce(self, send: Send) -> None:
        raise NotImplementedError

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        producer = asyncio.create_task(self.produce(send))
        watcher = asyncio.create_task(wait_for_disconnect(receive))
        try:
            await asyncio.wait({producer, watcher}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            # Also reached when this call itself is cancelled (server shutdown).
            for task in (producer, watcher):
                task.cancel()
            await asyncio.gather(producer, watcher, return_exceptions=True)
        if producer.done() and not producer.cancelled():
            error = producer.exception()
            if error is not None:
                raise error
