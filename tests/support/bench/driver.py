"""The load generator of `scripts/bench`: a small asyncio driver on aiohttp's client.

Why a driver of our own rather than a load-testing tool: the benchmark needs the time to the
*first line* of a stream as well as the whole answer, the same requests interleaved between
several targets (direct, and each proxy configuration), and the status of every response (a
false 503 is a finding, not noise); wrk/hey measure neither first lines nor NDJSON, and Locust
spends more CPU per request than the proxy under test does on this 2-core machine. aiohttp's
client, rather than httpx's, because the generator shares the cores with what it measures:
aiohttp's client costs about a third of httpx's per request here, so less of the measurement is
the generator's own work.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import aiohttp

SSE_DONE = b"data: [DONE]"


@dataclass(frozen=True)
class Target:
    """Where one side of a comparison sends its requests."""

    name: str
    url: str  # the generate endpoint, complete
    headers: dict[str, str] = field(default_factory=dict)
    # The body this target is sent, made from the Ollama generate body every target is given
    # (a peer gateway's own API); None: that body as it is.
    shape: Callable[[dict[str, Any]], dict[str, Any]] | None = None
    # Streams are server-sent events (`data: ...` lines, `data: [DONE]` at the end) rather
    # than NDJSON.
    sse: bool = False


@dataclass
class Outcome:
    status: int  # 0: no HTTP answer (connection failed, timed out, stream cut)
    first: float | None  # seconds to the first line of a stream (streams only)
    total: float  # seconds to the end of the answer
    detail: str = ""
    lines: int = 0  # lines of a stream (a token each but the last: the done line)
    last: bytes = b""  # a stream's last line (the done line, or the proxy's error)

    @property
    def ok(self) -> bool:
        return self.status == 200


def percentile(values: Sequence[float], q: float) -> float:
    """The nearest-rank percentile (q in 0..100); NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q / 100 * len(ordered)) - 1))]


# The servers measured (uvicorn's default, and the proxy's PROXY_KEEPALIVE_TIMEOUT_SECONDS)
# close a connection idle for 5 s; the generator forgets its idle ones sooner, so that it never
# sends on one a server is closing (a request then fails with "Can not write request body").
IDLE_SECONDS = 3.0


def new_session(timeout: float = 120.0, fresh_connections: bool = False
                ) -> aiohttp.ClientSession:
    """One keep-alive pool, unbounded (a bound here would be the generator's, not the server's
    limit), idle connections dropped before the servers drop them, no proxy from the
    environment; or a new connection per request."""
    connector = (aiohttp.TCPConnector(limit=0, ttl_dns_cache=None, force_close=True)
                 if fresh_connections else
                 aiohttp.TCPConnector(limit=0, ttl_dns_cache=None, keepalive_timeout=IDLE_SECONDS))
    return aiohttp.ClientSession(connector=connector,
                                 timeout=aiohttp.ClientTimeout(total=timeout), trust_env=False)


async def send(session: aiohttp.ClientSession, target: Target, body: dict[str, Any]
               ) -> Outcome:
    """One request, timed: to the first line of a stream and to the end of the body. A line
    is a non-empty one of NDJSON, or an event's `data:` line of server-sent events (the blank
    lines between events, and comments, are not); an event stream is read to its end and
    counts as cut (status 0) unless its last event is `data: [DONE]`."""
    started = time.perf_counter()
    first: float | None = None
    lines = 0
    last = b""
    payload = target.shape(body) if target.shape else body
    try:
        async with session.post(target.url, json=payload, headers=target.headers) as response:
            if response.status != 200:
                detail = (await response.read())[:200].decode(errors="replace")
                return Outcome(response.status, None, time.perf_counter() - started, detail)
            if body.get("stream", True):
                async for line in response.content:
                    if line.startswith(b"data:") if target.sse else line.strip():
                        if first is None:
                            first = time.perf_counter() - started
                        lines += 1
                        last = line
            else:
                await response.read()
            total = time.perf_counter() - started
            if target.sse and body.get("stream", True) and last.strip() != SSE_DONE:
                return Outcome(0, first, total, "event stream ended without data: [DONE]: "
                               + last[:120].decode(errors="replace"), lines, last)
            return Outcome(200, first, total, lines=lines, last=last)
    except (aiohttp.ClientError, TimeoutError) as exc:
        return Outcome(0, first, time.perf_counter() - started, f"{type(exc).__name__}: {exc}")


async def sequential(session: aiohttp.ClientSession, targets: Sequence[Target],
                     body: dict[str, Any], count: int) -> dict[str, list[Outcome]]:
    """`count` requests to each target, one at a time, interleaved (A, B, C, A, B, C, ...) so
    that the machine's noise falls on every target alike."""
    outcomes: dict[str, list[Outcome]] = {t.name: [] for t in targets}
    for _ in range(count):
        for target in targets:
            outcomes[target.name].append(await send(session, target, body))
    return outcomes


async def concurrent(session: aiohttp.ClientSession, target: Target, body: dict[str, Any],
                     clients: int, count: int) -> tuple[list[Outcome], float]:
    """`count` requests from `clients` clients at once, each sending its next request when its
    last one ends; the outcomes and the wall-clock seconds taken."""
    remaining = count
    outcomes: list[Outcome] = []

    async def client() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            outcomes.append(await send(session, target, body))

    started = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(min(clients, count))))
    return outcomes, time.perf_counter() - started


async def burst(session: aiohttp.ClientSession, targets: Sequence[Target],
                body: dict[str, Any], count: int) -> list[Outcome]:
    """`count` requests sent all at once, spread over `targets` in turn (replicas of one
    service, or a single target)."""
    return list(await asyncio.gather(*(send(session, targets[i % len(targets)], body)
                                       for i in range(count))))
