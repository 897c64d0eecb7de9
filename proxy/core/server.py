"""How uvicorn serves the proxy: forwarding headers, limits before authentication, logging.

The HTTP implementation is h11, not httptools (uvicorn's default when installed): httptools
keeps reading a request head however large it grows, h11 refuses an unfinished head larger
than `PROXY_MAX_HEADER_BYTES` with 400. A head that arrives whole in one read (up to asyncio's
256 KiB) is still parsed; either way what one connection can make the server hold is bounded.

uvicorn has no deadline for receiving a request head, so `HeadDeadlineH11Protocol` adds one
(`PROXY_HEADER_TIMEOUT_SECONDS`); it relies on uvicorn's `H11Protocol` internals (`conn`,
`loop`, `on_response_complete`), which tests/proxy/test_edge_limits.py exercises for real.

Everything `python -m proxy serve` passes to `uvicorn.run` besides the app, host and port is
decided here, from the settings, so that it can be read (and tested) in one place.
"""

from __future__ import annotations

import asyncio
from typing import Any, cast

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from proxy.core.logs import logging_config
from proxy.core.settings import Settings


class HeadDeadlineH11Protocol(H11Protocol):
    """uvicorn's h11 protocol, plus a deadline for each request head.

    uvicorn's keep-alive timer runs only between requests and stops at the first byte of the
    next one, and a new connection has no timer at all: a client that opens connections and
    sends a header line now and then ("slowloris") would hold them for ever, and with the
    connection cap lock everyone else out. Here a request head must be complete within
    `header_timeout` seconds of the connection opening or of the previous response ending;
    otherwise the connection is closed. Once the head is in, the deadline no longer applies
    (bodies and streams have their own limits).
    """

    header_timeout: float = 15.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._head_deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._start_head_deadline()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self.conn.their_state is not h11.IDLE:  # the head is complete (or was refused)
            self._stop_head_deadline()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        # IDLE again: waiting for the next request's head (a pipelined one may already be in).
        if not self.transport.is_closing() and self.conn.their_state is h11.IDLE:
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
        if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
            self.transport.close()


def http_protocol(header_timeout: float) -> type[HeadDeadlineH11Protocol]:
    """The protocol class uvicorn instantiates per connection, with this deadline."""
    return cast(type[HeadDeadlineH11Protocol],
                type("HeadDeadlineH11Protocol", (HeadDeadlineH11Protocol,),
                     {"header_timeout": header_timeout}))


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
        "http": http_protocol(settings.proxy_header_timeout_seconds),
        "h11_max_incomplete_event_size": settings.proxy_max_header_bytes,
        "limit_concurrency": settings.proxy_max_connections,
        "timeout_keep_alive": settings.proxy_keepalive_timeout_seconds,
    }
