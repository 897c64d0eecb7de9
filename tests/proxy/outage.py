"""A TCP forwarder that can fail: a real network outage between the proxy and its database.

Two kinds of outage, the two a database link really has:

- `cut()`: the peer is gone and says so. Every connection is reset, new ones are refused
  (accepted, then reset at once), so the client learns of the outage immediately.
- `blackhole()`: the peer is silent (a partition, a dead host, a dropped route). Connections are
  accepted, nothing is answered and nothing is forwarded, so the client learns nothing until its
  own timeouts fire. Open connections stall, as TCP does when packets are lost: what was sent is
  held, not dropped, and flows again after `restore()`; connections made during it reach the
  database only after `restore()`.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
from types import TracebackType


class TcpOutage:
    """Listens on 127.0.0.1:<port> and forwards to `target` until `cut()` or `blackhole()`;
    `restore()` ends either."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self._listener = socket.socket()
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(64)
        self.port: int = self._listener.getsockname()[1]
        self._down = False
        self._closed = False
        self._lock = threading.Lock()
        # Set while bytes may flow; cleared by `blackhole()`.
        self._flowing = threading.Event()
        self._flowing.set()
        self._open: set[socket.socket] = set()
        self._thread = threading.Thread(target=self._accept, daemon=True)

    def __enter__(self) -> TcpOutage:
        self._thread.start()
        return self

    def __exit__(self, *exc: object | TracebackType | None) -> None:
        self._closed = True
        self.cut()
        self._flowing.set()  # wakes the stalled threads, which find the link closed
        self._listener.close()

    def cut(self) -> None:
        with self._lock:
            self._down = True
            for sock in list(self._open):
                self._reset(sock)
            self._open.clear()

    def blackhole(self) -> None:
        with self._lock:
            self._flowing.clear()

    def restore(self) -> None:
        with self._lock:
            self._down = False
            self._flowing.set()

    @staticmethod
    def _reset(sock: socket.socket) -> None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        with contextlib.suppress(OSError):
            sock.close()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            with self._lock:
                down = self._down
                if not down:
                    self._open.add(client)
            if down:
                self._reset(client)
                continue
            threading.Thread(target=self._connect, args=(client,), daemon=True).start()

    def _connect(self, client: socket.socket) -> None:
        # A connection accepted during a blackhole waits here, unanswered, until it ends.
        self._flowing.wait()
        with self._lock:
            gone = self._down or self._closed or client not in self._open
        if gone:
            self._reset(client)
            return
        try:
            upstream = socket.create_connection(self.target, timeout=5)
            upstream.settimeout(None)
        except OSError:
            self._reset(client)
            return
        with self._lock:
            if client not in self._open:  # cut while connecting
                self._reset(upstream)
                return
            self._open.add(upstream)
        for a, b in ((client, upstream), (upstream, client)):
            threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                self._flowing.wait()
                if self._closed:
                    break
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)


def postgres_outage(postgres_url: str) -> TcpOutage:
    """A forwarder to the Postgres server of `postgres_url` (enter it to start forwarding)."""
    host_port = postgres_url.split("@", 1)[1].split("/", 1)[0]
    host, _, port = host_port.rpartition(":")
    return TcpOutage(host or "127.0.0.1", int(port or 5432))


def url_through(link: TcpOutage, postgres_url: str) -> str:
    """`postgres_url` with its server replaced by the forwarder `link`."""
    credentials, rest = postgres_url.split("@", 1)
    return f"{credentials}@127.0.0.1:{link.port}/{rest.split('/', 1)[1]}"
