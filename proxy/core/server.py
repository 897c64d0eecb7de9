"""How uvicorn serves the proxy: forwarding headers, limits before authentication, logging.

The HTTP implementation is uvicorn's httptools protocol (llhttp, in C), with the two limits
uvicorn leaves out added by `BoundedHttpToolsProtocol`:
- **A cap on the request head** (`PROXY_MAX_HEADER_BYTES`): httptools keeps reading a head
  however large it grows. Here the bytes that arrive while a head is unfinished are counted, and
  past the cap the connection is answered 400 and closed. A head that arrives whole in one read
  (up to asyncio's 256 KiB) is still parsed; either way what one connection can make the server
  hold is bounded.
- **A deadline for the request head** (`PROXY_HEADER_TIMEOUT_SECONDS`): uvicorn has none.

It also writes to the socket once per turn of the event loop (`CoalescedWrites`): a stream's
lines that come from the engine in one read, or a response's head and body, leave in one
system call instead of one each.

Why httptools and not h11 (which has a head cap of its own): h11 parses in Python, and measured
here it was the largest single cost of a request after the proxy's own work (`scripts/bench`).
The class relies on uvicorn's `HttpToolsProtocol` internals (its parser callbacks,
`on_response_complete`, `send_400_response`, `handle_websocket_upgrade`, `transport`, `loop`),
which tests/proxy/test_edge_limits.py exercises for real on every run, and
tests/proxy/fast/test_coalesced_writes.py for the writes.

Everything `python -m proxy serve` passes to `uvicorn.run` besides the app, host and port is
decided here, from the settings, so that it can be read (and tested) in one place.
"""

from __future__ import annotations

import asyncio
from typing import Any, cast

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from proxy.core.logs import logging_config
from proxy.core.settings import Settings


class CoalescedWrites:
    """A transport whose writes made in one turn of the event loop go out as one write.

    A stream's lines that arrive from the engine in one read are all written before the task
    next waits; written as they come, each would be its own system call (and, on a busy
    machine, its own TCP segment). Here they are joined and written at the start of the next
    turn of the loop, before any new input is read: the bytes and their order are the same, and
    a line that arrives alone is written alone, as soon as before. A response's head and its
    first body part, or a whole small response, go out in one write too.
    """

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self.raw = transport
        self._loop = loop
        self._pending: list[bytes] = []
        self._flush: asyncio.Handle | None = None

    def write(self, data: bytes) -> None:
        if data:
            self._pending.append(data)
            if self._flush is None:
                self._flush = self._loop.call_soon(self.flush)

    def flush(self) -> None:
        if self._flush is not None:
            self._flush.cancel()
            self._flush = None
        if self._pending:
            data = self._pending[0] if len(self._pending) == 1 else b"".join(self._pending)
            self._pending.clear()
            if not self.raw.is_closing():
                self.raw.write(data)

    def close(self) -> None:
        self.flush()
        self.raw.close()

    def is_closing(self) -> bool:
        return self.raw.is_closing()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.raw, name)


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, plus a cap on and a deadline for each request head.

    The deadline: uvicorn's keep-alive timer runs only between requests and stops at the first
    byte of the next one, and a new connection has no timer at all: a client that opens
    connections and sends a header line now and then ("slowloris") would hold them for ever,
    and with the connection cap lock everyone else out. Here a request head must be complete
    within `header_timeout` seconds of the connection opening or of the previous request ending;
    otherwise the connection is closed. Once the head is in, the deadline no longer applies
    (bodies and streams have their own limits).
    """

    header_timeout: float = 15.0
    max_head_bytes: int = 16_384

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._head_deadline: asyncio.TimerHandle | None = None
        # Waiting for (the rest of) a request head, and how many bytes have come meanwhile.
        self._in_head = True
        self._head_bytes = 0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self.transport = cast(asyncio.Transport, CoalescedWrites(transport, self.loop))
        self._start_head_deadline()

    def handle_websocket_upgrade(self) -> None:
        # The WebSocket protocol gets the socket's own transport, everything before it written.
        if isinstance(self.transport, CoalescedWrites):
            self.transport.flush()
            self.transport = self.transport.raw
        super().handle_websocket_upgrade()

    def data_received(self, data: bytes) -> None:
        if self._in_head:
            self._head_bytes += len(data)
        super().data_received(data)
        if self._in_head and self._head_bytes > self.max_head_bytes \
                and not self.transport.is_closing():
            self._stop_head_deadline()
            self.send_400_response(
                "Request head too large (larger than PROXY_MAX_HEADER_BYTES).")

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._stop_head_deadline()
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        # The next bytes are the next request's head. Its deadline starts when the response
        # is complete; if that came first (a refusal before the body was read), now.
        self._in_head = True
        self._head_bytes = 0
        if self.cycle is not None and self.cycle.response_complete:
            self._start_head_deadline()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        # Waiting for the next request's head (a pipelined one may already be in).
        if not self.transport.is_closing() and self._in_head:
            self._start_head_deadline()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_head_deadline()
        super().connection_lost(exc)

    def _start_head_deadline(self) -> None:
        self._stop_head_deadline()
        self._head_deadline = self.loop.call_later(self.header_timeout, self._head_too_slow)

    def _stop_head_deadline(self) -> None:
        if self._head_deadline is not None:
            self._head_deadline.cancel()
            self._head_deadline = None

    def _head_too_slow(self) -> None:
        self._head_deadline = None
        if self._in_head and not self.transport.is_closing():
            self.transport.close()


def http_protocol(header_timeout: float, max_head_bytes: int
                  ) -> type[BoundedHttpToolsProtocol]:
    """The protocol class uvicorn instantiates per connection, with these limits."""
    return cast(type[BoundedHttpToolsProtocol],
                type("BoundedHttpToolsProtocol", (BoundedHttpToolsProtocol,),
                     {"header_timeout": header_timeout, "max_head_bytes": max_head_bytes}))


def server_options(settings: Settings) -> dict[str, Any]:
    """The keyword arguments for `uvicorn.run`, other than the app, host and port."""
    return {
        "log_level": settings.proxy_log_level,
        "log_config": logging_config(settings.proxy_log_format, settings.proxy_log_level),
        # The proxy writes its own line per request (proxy/api/access_log.py).
        "access_log": False,
        # Forwarding headers are believed only from the configured proxies; uvicorn's own
        # default would trust 127.0.0.1, i.e. anything reaching the proxy through a local hop.
        "proxy_headers": bool(settings.proxy_trusted_proxies),
        "forwarded_allow_ips": settings.proxy_trusted_proxies,
        "ws_max_size": 2 * settings.proxy_max_body_bytes,
        "http": http_protocol(settings.proxy_header_timeout_seconds,
                              settings.proxy_max_header_bytes),
        "limit_concurrency": settings.proxy_max_connections,
        "timeout_keep_alive": settings.proxy_keepalive_timeout_seconds,
    }
