"""The floor of the benchmark (`floor` in `scripts/bench`): the least a Python gateway in front
of the simulator can cost on this machine, measured in the same run as the proxy.

A bare ASGI app, no framework, served by uvicorn with httptools (and uvloop, which uvicorn
picks when it is installed), in a process of its own. It relays each `POST /api/generate` body
as it came to the simulator's `/api/generate` through one shared aiohttp session (kept-alive
connections, no cookie jar, the URL parsed once), and answers with the simulator's status,
content type and body: a whole answer read whole and sent in one message, a stream (told by its
NDJSON content type) relayed chunk by chunk as it arrives. Nothing else: no auth, no limits, no
audit, no metrics, no parsing of the body. What the proxy adds over this figure is its own
work; what this adds over `direct` is what any Python gateway here pays first (its HTTP server,
one more hop, its client).

`python -m tests.support.bench.floor --port PORT --upstream SIMULATOR_URL`; the bench starts it
as a child process with `running(...)`, which yields its generate URL once it answers.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import sys
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import uvicorn
from yarl import URL

from tests.support.child_process import die_with_parent, stop_child, wait_for_child
from tests.support.proxy_process import free_port
from tests.support.timing import scaled

PATH = "/api/generate"
NDJSON = "application/x-ndjson"
_PACKAGE_ROOT = Path(__file__).resolve().parents[3]  # the folder holding `tests/`

Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


class Relay:
    """The ASGI app: `POST /api/generate` relayed to the upstream's, anything else 404."""

    def __init__(self, upstream: str) -> None:
        self.url = URL(upstream.rstrip("/") + PATH)
        self._session: aiohttp.ClientSession | None = None

    def session(self) -> aiohttp.ClientSession:
        # Made on first use: a session belongs to the running event loop.
        if self._session is None:
            # An unbounded pool: no limit of its own on connections to the simulator.
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=0), cookie_jar=aiohttp.DummyCookieJar(),
                trust_env=False)
        return self._session

    async def __call__(self, scope: Message, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
        elif scope["type"] == "http":
            if scope["method"] == "POST" and scope["path"] == PATH:
                await self._relay(scope, receive, send)
            else:
                await send({"type": "http.response.start", "status": 404,
                            "headers": [(b"content-length", b"0")]})
                await send({"type": "http.response.body", "body": b""})

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if self._session is not None:
                    await self._session.close()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _post(self, body: bytes, headers: dict[str, str]) -> aiohttp.ClientResponse:
        """The simulator's response once its head is in. A kept-alive connection the simulator
        has closed meanwhile (uvicorn drops idle ones after 5 s) fails before any answer: the
        request goes once more on a new connection, as the proxy's relay sends it again."""
        try:
            return await self.session().post(self.url, data=body, headers=headers)
        except (aiohttp.ServerDisconnectedError, aiohttp.ClientConnectionResetError,
                aiohttp.ClientOSError) as exc:
            if isinstance(exc, aiohttp.ClientConnectorError):  # refused: nothing to retry
                raise
            return await self.session().post(self.url, data=body, headers=headers)

    async def _relay(self, scope: Message, receive: Receive, send: Send) -> None:
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        headers = {name.decode("latin-1"): value.decode("latin-1")
                   for name, value in scope["headers"] if name == b"content-type"}
        async with await self._post(body, headers) as response:
            content_type = response.headers.get("Content-Type", "")
            head = [(b"content-type", content_type.encode("latin-1"))] if content_type else []
            if not content_type.startswith(NDJSON):
                whole = await response.read()
                await send({"type": "http.response.start", "status": response.status,
                            "headers": [*head, (b"content-length", str(len(whole)).encode())]})
                await send({"type": "http.response.body", "body": whole})
                return
            await send({"type": "http.response.start", "status": response.status,
                        "headers": head})
            async for chunk in response.content.iter_any():
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b""})


def _not_answering(base: str) -> str | None:
    """None once the relay answers anything over HTTP (a GET of / is a 404)."""
    try:
        httpx.get(base + "/", timeout=scaled(2))
    except httpx.HTTPError as exc:
        return f"{type(exc).__name__}: {exc}"
    return None


@contextlib.contextmanager
def running(upstream: str, workdir: Path) -> Iterator[str]:
    """The relay in front of `upstream` (the simulator's base URL), on a free port, until the
    end of the block: its generate endpoint's URL. Its output goes to `workdir`/floor.log."""
    port = free_port()
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        p for p in (str(_PACKAGE_ROOT), os.environ.get("PYTHONPATH", "")) if p))
    log_path = workdir / "floor.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "tests.support.bench.floor", "--port", str(port),
             "--upstream", upstream],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env,
            preexec_fn=die_with_parent)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for_child(process, "the floor relay", lambda: _not_answering(base), scaled(30),
                       lambda: log_path.read_text(errors="replace"))
        yield base + PATH
    finally:
        stop_child(process, scaled(10))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m tests.support.bench.floor",
        description="A bare ASGI relay to the simulator's /api/generate: the bench's floor.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream", required=True,
                        help="the simulator's base URL, e.g. http://127.0.0.1:11434")
    args = parser.parse_args(argv)
    uvicorn.run(Relay(args.upstream), host=args.host, port=args.port, http="httptools",
                log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
