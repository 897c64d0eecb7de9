"""The HTTP server's writes (proxy/core/server.py): what the app writes in one turn of the event
loop leaves in one write to the socket, the same bytes in the same order, and nothing written
is lost to a close. Driven on a real socket, with uvicorn's own protocol class under it."""

from __future__ import annotations

import asyncio
from typing import Any

import h11
from uvicorn.config import Config
from uvicorn.server import ServerState

from proxy.core.server import CoalescedWrites, http_protocol

LINES = [b'{"n":%d}\n' % n for n in range(5)]


class Recording:
    """A transport's writes, counted on the way to the socket."""

    def __init__(self, transport: asyncio.Transport) -> None:
        self.writes: list[bytes] = []
        original = transport.write

        def write(data: bytes | bytearray | memoryview) -> None:
            self.writes.append(bytes(data))
            original(data)

        transport.write = write  # type: ignore[method-assign]


async def stream_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """A stream whose lines are all in hand at once (as when they came in one read), then,
    after a wait on something else, one more line."""
    assert scope["type"] == "http"
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/x-ndjson")]})
    for line in LINES:
        await send({"type": "http.response.body", "body": line, "more_body": True})
    await asyncio.sleep(0.01)
    await send({"type": "http.response.body", "body": b'{"done":true}\n', "more_body": False})


async def serve(app: Any) -> tuple[asyncio.Server, list[Recording]]:
    protocol_class = http_protocol(header_timeout=15.0, max_head_bytes=16_384)
    config = Config(app=app, lifespan="off", log_level="warning")
    config.load()
    state = ServerState()
    recordings: list[Recording] = []

    def factory() -> asyncio.Protocol:
        protocol = protocol_class(config=config, server_state=state, app_state={})
        made = protocol.connection_made

        def connection_made(transport: asyncio.BaseTransport) -> None:
            recordings.append(Recording(transport))  # type: ignore[arg-type]
            made(transport)  # type: ignore[arg-type]

        protocol.connection_made = connection_made  # type: ignore[method-assign]
        return protocol

    server = await asyncio.get_running_loop().create_server(factory, "127.0.0.1", 0)
    return server, recordings


async def get(server: asyncio.Server) -> tuple[int, bytes]:
    """One GET through a real client connection; its status and its de-chunked body."""
    port = server.sockets[0].getsockname()[1]
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    client = h11.Connection(h11.CLIENT)
    writer.write(client.send(h11.Request(method="GET", target="/",
                                         headers=[("host", "test")])))
    writer.write(client.send(h11.EndOfMessage()))
    status, body = 0, b""
    while True:
        event = client.next_event()
        if event is h11.NEED_DATA:
            client.receive_data(await reader.read(65536))
        elif isinstance(event, h11.Response):
            status = event.status_code
        elif isinstance(event, h11.Data):
            body += event.data
        elif isinstance(event, h11.EndOfMessage):
            break
    writer.close()
    await writer.wait_closed()
    return status, body


async def test_what_is_written_in_one_turn_goes_out_in_one_write() -> None:
    server, recordings = await serve(stream_app)
    async with server:
        status, body = await get(server)
    assert status == 200
    assert body == b"".join(LINES) + b'{"done":true}\n'
    writes = recordings[0].writes
    # The head and the five lines in hand: one write. The last line, after a wait, and the
    # chunked body's end: another.
    assert len(writes) == 2, writes
    assert writes[0].startswith(b"HTTP/1.1 200 OK\r\n")
    assert writes[0].endswith(b"".join(b"%x\r\n%s\r\n" % (len(line), line) for line in LINES))
    assert writes[1] == b'e\r\n{"done":true}\n\r\n0\r\n\r\n'


async def test_a_whole_response_is_one_write() -> None:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-length", b"2")]})
        await send({"type": "http.response.body", "body": b"ok"})

    server, recordings = await serve(app)
    async with server:
        assert await get(server) == (200, b"ok")
    assert len(recordings[0].writes) == 1


class FakeTransport:
    def __init__(self) -> None:
        self.written: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        assert not self.closed
        self.written.append(data)

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def get_write_buffer_size(self) -> int:
        return 0


async def test_close_writes_what_is_pending_first() -> None:
    raw = FakeTransport()
    writes = CoalescedWrites(raw, asyncio.get_running_loop())  # type: ignore[arg-type]
    writes.write(b"a")
    writes.write(b"")
    writes.write(b"b")
    assert raw.written == []
    writes.close()
    assert raw.written == [b"ab"] and raw.closed
    await asyncio.sleep(0)  # the flush that was scheduled finds nothing to write
    assert raw.written == [b"ab"]


async def test_nothing_is_written_to_a_transport_already_closing() -> None:
    raw = FakeTransport()
    writes = CoalescedWrites(raw, asyncio.get_running_loop())  # type: ignore[arg-type]
    writes.write(b"late")
    raw.closed = True  # the peer went away before the next turn
    await asyncio.sleep(0)
    assert raw.written == []
    # Everything else is the transport's own.
    assert writes.get_write_buffer_size() == 0
