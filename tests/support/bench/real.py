"""A real model through the proxy against the same model called directly: llama.cpp's
llama-server with Gemma 3 270M on CPU (tests/support/real_model.py; scripts/real-model installs
it), behind a proxy process as an `openai`-kind upstream.

Both sides get the same streamed OpenAI completions (`/v1/completions`, usage in the last chunk),
at each level of concurrent users, direct first, then through the proxy. The figures per level
and side: time to the first content chunk (p50), completion tokens per second over the
wall-clock time, and the 95th percentile of whole-answer latency.
"""

from __future__ import annotations

import asyncio
import json
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import yaml

from tests.support.bench.driver import new_session, percentile
from tests.support.proxy_process import start_proxy, stop_proxy
from tests.support.real_model import run_llama_server
from tests.support.timing import wait_until
from tests.support.tokens import auth

# A base model counts on (and on) from here, so every answer runs to its token budget.
PROMPT = "1, 2, 3, 4, 5, 6, 7, 8, 9, 10,"


@dataclass
class Answer:
    status: int  # 0: no HTTP answer
    ok: bool
    ttft: float
    total: float
    tokens: int


async def streamed_completion(session: aiohttp.ClientSession, base: str,
                              headers: dict[str, str], model: str, tokens: int) -> Answer:
    body = {"model": model, "prompt": PROMPT, "max_tokens": tokens, "temperature": 0,
            "stream": True, "stream_options": {"include_usage": True}}
    started = time.perf_counter()
    first = 0.0
    used = 0
    try:
        async with session.post(f"{base}/completions", json=body, headers=headers) as response:
            if response.status != 200:
                await response.read()
                return Answer(response.status, False, 0.0, time.perf_counter() - started, 0)
            async for raw in response.content:
                line = raw.decode().strip()
                if not line.startswith("data:") or line == "data: [DONE]":
                    continue
                event: dict[str, Any] = json.loads(line[5:])
                if not first and any(c.get("text") for c in event.get("choices") or []):
                    first = time.perf_counter() - started
                used = (event.get("usage") or {}).get("completion_tokens") or used
    except (aiohttp.ClientError, TimeoutError):
        return Answer(0, False, first, time.perf_counter() - started, used)
    return Answer(200, bool(first and used), first, time.perf_counter() - started, used)


async def level(base: str, headers: dict[str, str], model: str, users: int, requests: int,
                tokens: int) -> dict[str, Any]:
    """`users` users at once, each sending `requests` requests one after the other."""
    answers: list[Answer] = []

    async def user(session: aiohttp.ClientSession) -> None:
        for _ in range(requests):
            answers.append(await streamed_completion(session, base, headers, model, tokens))

    # A connection per request: llama-server closes its end after a stream while it says
    # keep-alive, and a request sent at once after would fail on the half-closed connection.
    # A connection costs well under a millisecond here; answers take seconds.
    async with new_session(timeout=600, fresh_connections=True) as session:
        started = time.perf_counter()
        await asyncio.gather(*(user(session) for _ in range(users)))
        wall = time.perf_counter() - started
    good = [a for a in answers if a.ok]
    return {
        "ttft_p50_ms": round(percentile([a.ttft for a in good], 50) * 1000, 1),
        "p95_ms": round(percentile([a.total for a in good], 95) * 1000, 1),
        "tokens_per_s": round(sum(a.tokens for a in good) / wall, 2),
        "errors": len(answers) - len(good),
        "failed_statuses": sorted({a.status for a in answers if not a.ok}),
    }


def run(users: list[int], tokens: int, requests: int) -> dict[str, Any]:
    with run_llama_server(parallel=max(users)) as server, \
            tempfile.TemporaryDirectory(prefix="bench-real-") as tmp:
        workdir = Path(tmp)
        upstreams = workdir / "upstreams.yml"
        upstreams.write_text(yaml.safe_dump({"upstreams": [
            {"name": "llama-cpp", "kind": "openai", "url": server.openai_base}]}))
        # Twice the users: a user's next request may come before its last one's slot is
        # given back (after the last byte went out), which is not what is measured here.
        proxy = start_proxy(workdir, {"PROXY_UPSTREAMS_FILE": str(upstreams),
                                      "PROXY_CONCURRENCY_LIMIT": str(2 * max(users))})
        try:
            wait_until(lambda: server.model in httpx.get(
                f"{proxy.url}/api/llm/models", headers=auth(), timeout=10).text, timeout=30)
            sides = {"direct": (server.openai_base, {}),
                     "proxy": (f"{proxy.url}/v1", auth())}
            for base, headers in sides.values():  # warm-up: the model's first pass, the pools
                asyncio.run(level(base, headers, server.model, 1, 1, 4))
            figures: dict[str, dict[str, Any]] = {}
            for count in users:
                figures[str(count)] = {
                    side: asyncio.run(level(base, headers, server.model, count, requests,
                                            tokens))
                    for side, (base, headers) in sides.items()}
            threads = server.args[server.args.index("--threads") + 1]
        finally:
            stop_proxy(proxy)
    return {"tokens": tokens, "requests_per_user": requests, "engine_threads": threads,
            "users": figures}
