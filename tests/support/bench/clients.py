"""The upstream HTTP client on the hot path, measured alone: httpx's AsyncClient (the proxy's) and
aiohttp's ClientSession send the same requests to the simulator, interleaved, one at a time, on
one keep-alive connection each. What differs between them is each client's own work per request:
on the proxy's hot path that is time added to every generation."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import httpx

from tests.support.bench.driver import percentile
from tests.support.simulator.process import run_simulator

BODY = {"model": "llama3.2", "prompt": "benchmark", "options": {"num_predict": 16}}


async def _measure(url: str, count: int) -> dict[str, dict[str, float]]:
    async with httpx.AsyncClient(timeout=60, trust_env=False) as hx, \
            aiohttp.ClientSession(trust_env=False) as aio:

        async def httpx_once() -> None:
            (await hx.post(url, json={**BODY, "stream": False})).raise_for_status()

        async def httpx_stream() -> None:
            async with hx.stream("POST", url, json={**BODY, "stream": True}) as response:
                async for _ in response.aiter_lines():
                    pass

        async def aiohttp_once() -> None:
            async with aio.post(url, json={**BODY, "stream": False}) as response:
                await response.read()

        async def aiohttp_stream() -> None:
            async with aio.post(url, json={**BODY, "stream": True}) as response:
                async for _ in response.content:
                    pass

        cases: dict[str, Callable[[], Awaitable[None]]] = {
            "httpx non-streamed": httpx_once, "aiohttp non-streamed": aiohttp_once,
            "httpx streamed": httpx_stream, "aiohttp streamed": aiohttp_stream}
        times: dict[str, list[float]] = {name: [] for name in cases}
        for round_ in range(count + 20):
            for name, case in cases.items():
                started = time.perf_counter()
                await case()
                if round_ >= 20:  # the first rounds warm the pools up
                    times[name].append(time.perf_counter() - started)
    return {name: {"p50_ms": round(percentile(t, 50) * 1000, 3),
                   "p99_ms": round(percentile(t, 99) * 1000, 3)} for name, t in times.items()}


def run(count: int) -> dict[str, Any]:
    with run_simulator(first_token_delay=0.0, tokens_per_second=100_000) as sim:
        return {"requests": count,
                "clients": asyncio.run(_measure(f"{sim.url}/api/generate", count))}
