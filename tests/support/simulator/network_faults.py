"""Faults below HTTP: dropping a connection without an answer, refusing new connections.

ASGI gives an app no handle on its TCP connection, so both reach into uvicorn:
- `abort_connection` finds the request's transport (through uvicorn's receive callable, or the
  server's connection set) and aborts it with SO_LINGER 0, so the client sees a reset instead
  of an HTTP response.
- `ListenerControl.refuse` closes uvicorn's listening sockets, so connects get ECONNREFUSED, and
  reopens them on the same address later with uvicorn's own protocol class. It needs the
  `uvicorn.Server` object, which only the simulator's own runner
  (`python -m tests.support.simulator`)
  hands over; apps served some other way answer 501 to the `refuse` fault.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import socket
import struct
from typing import Any

import uvicorn
from starlette.types import Receive, Scope

logger = logging.getLogger("tests.support.simulator")

_REBIND_ATTEMPTS = 40
_REBIND_PAUSE = 0.05


def _client_key(client: Any) -> tuple[Any, ...] | None:
    return tuple(client) if client else None


class ListenerControl:
    """Closes and reopens the listening sockets of a running `uvicorn.Server`."""

    def __init__(self, server: uvicorn.Server, sockets: list[socket.socket]) -> None:
        self._server = server
        self._sockets = sockets
        self._addresses = [(s.family, s.getsockname()) for s in sockets]
        self._reopen: asyncio.Task[None] | None = None

    @property
    def refusing(self) -> bool:
        return self._reopen is not None and not self._reopen.done()

    def transport_of(self, client: Any) -> Any:
        """The transport of the connection whose peer address is `client`, if any."""
        key = _client_key(client)
        for connection in list(self._server.server_state.connections):
            if key is not None and _client_key(getattr(connection, "client", None)) == key:
                return getattr(connection, "transport", None)
        return None

    def refuse(self, seconds: float, spare_client: Any) -> None:
        """Stop listening for `seconds`, dropping every connection but the caller's.

        Open keep-alive connections are aborted too: a stopped Ollama would not answer on
        them either, and a pooled client must not slip past the outage on an old socket.
        """
        if self.refusing:
            raise RuntimeError("already refusing connections")
        for server in self._server.servers:
            server.close()
        for sock in self._sockets:
            sock.close()
        spare = _client_key(spare_client)
        for connection in list(self._server.server_state.connections):
            if _client_key(getattr(connection, "client", None)) == spare:
                continue
            transport = getattr(connection, "transport", None)
            if transport is not None:
                _reset(transport)
        logger.info("refusing connections for %.2fs", seconds)
        self._reopen = asyncio.create_task(self._reopen_after(seconds))

    async def _reopen_after(self, seconds: float) -> None:
        await asyncio.sleep(seconds)
        if self._server.should_exit:
            return
        loop = asyncio.get_running_loop()
        config = self._server.config
        server_state = self._server.server_state
        app_state = self._server.lifespan.state
        protocol_class: Any = config.http_protocol_class

        # Mirrors uvicorn.Server.startup's protocol factory; uvicorn keeps it in a closure.
        def create_protocol(_loop: asyncio.AbstractEventLoop | None = None) -> asyncio.Protocol:
            protocol: asyncio.Protocol = protocol_class(
                config=config, server_state=server_state, app_state=app_state, _loop=_loop
            )
            return protocol

        sockets = [await _rebind(family, address) for family, address in self._addresses]
        self._server.servers = [
            await loop.create_server(create_protocol, sock=sock, backlog=config.backlog)
            for sock in sockets
        ]
        self._sockets = sockets
        logger.info("accepting connections again")


async def _rebind(family: int, address: Any) -> socket.socket:
    for attempt in range(_REBIND_ATTEMPTS):
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(address)
        except OSError as exc:
            sock.close()
            if exc.errno != errno.EADDRINUSE or attempt == _REBIND_ATTEMPTS - 1:
                raise
            await asyncio.sleep(_REBIND_PAUSE)
            continue
        sock.listen(socket.SOMAXCONN)
        sock.setblocking(False)
        return sock
    raise AssertionError("unreachable")


def _reset(transport: Any) -> None:
    # SO_LINGER 0 turns close() into an RST: the peer gets "connection reset" at once rather
    # than a clean FIN it could mistake for the end of a response.
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()


async def abort_connection(
    scope: Scope, receive: Receive, listener: ListenerControl | None
) -> bool:
    """Reset the request's TCP connection without any response. False if it cannot."""
    # uvicorn's receive is a bound method of its per-request cycle, which holds the transport.
    transport = getattr(getattr(receive, "__self__", None), "transport", None)
    if transport is None and listener is not None:
        transport = listener.transport_of(scope.get("client"))
    if transport is None:
        return False
    _reset(transport)
    # Wait for uvicorn to see the connection lost; returning earlier would make it try to
    # send a 500 for a response that was never started.
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(2):
            while (await receive())["type"] != "http.disconnect":
                pass
    return True
