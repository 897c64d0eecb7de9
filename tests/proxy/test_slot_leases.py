"""Concurrency slots in Redis under faults and load: a Redis outage while streams run, a replica
killed with `kill -9` while it holds slots, and two hundred streams at once. A slot is a lease
the holder renews while its generation runs, so a slot whose holder is gone frees within
seconds, a release that fails is retried, and nobody is told "unavailable" because the proxy
ran out of Redis connections."""

from __future__ import annotations

import asyncio
import json
import time
import uuid

import httpx
import pytest
import redis

from tests.proxy.outage import TcpOutage
from tests.support.proxy_process import ProxyProcess, counted
from tests.support.timing import scaled, wait_until
from tests.support.tokens import auth

pytestmark = pytest.mark.usefixtures("sim")

REDIS_HOST, REDIS_PORT = "127.0.0.1", 6379
REDIS = f"redis://{REDIS_HOST}:{REDIS_PORT}/0"
LEASE = 3  # seconds: short, so that a dead holder's slots free within the test's patience


def fresh_user() -> str:
    return f"lease-{uuid.uuid4().hex[:10]}"


def slots_held(user: str) -> int:
    with redis.Redis.from_url(REDIS) as client:
        return int(client.zcard(f"llm-proxy:slots:{user}"))


def generate(proxy: ProxyProcess, user: str) -> httpx.Response:
    with proxy.client() as client:
        return client.post("/api/llm/generate", headers=auth(user),
                           json={"model": "llama3.2", "prompt": "hi", "stream": False,
                                 "options": {"num_predict": 1}})


def open_stream(proxy: ProxyProcess, user: str, tokens: int
                ) -> tuple[httpx.Client, httpx.Response]:
    client = httpx.Client(base_url=proxy.url, timeout=scaled(30))
    request = client.build_request(
        "POST", "/api/llm/generate", headers=auth(user),
        json={"model": "llama3.2", "prompt": "long", "options": {"num_predict": tokens}})
    return client, client.send(request, stream=True)


def admitted_within(proxy: ProxyProcess, user: str, seconds: float) -> float:
    """Seconds until `user` is admitted again (429 and 503 meanwhile); fails past `seconds`."""
    started = time.monotonic()
    while True:
        response = generate(proxy, user)
        if response.status_code == 200:
            return time.monotonic() - started
        assert response.status_code in (429, 503), response.text
        assert time.monotonic() - started < seconds, (
            f"still refused after {seconds:g} s: {response.status_code} {response.text}")
        time.sleep(0.1)


def test_slots_held_through_a_redis_outage_come_back(proxy_factory, simulator, sim) -> None:
    sim.configure(tokens_per_second=10)
    user = fresh_user()
    with TcpOutage(REDIS_HOST, REDIS_PORT) as outage:
        proxy = proxy_factory(OLLAMA_URL=simulator.url,
                              REDIS_URL=f"redis://127.0.0.1:{outage.port}/0",
                              PROXY_CONCURRENCY_LIMIT="2", PROXY_RATE_LIMIT="1000/minute")
        streams = [open_stream(proxy, user, tokens=15) for _ in range(2)]
        try:
            assert [response.status_code for _, response in streams] == [200, 200]
            assert generate(proxy, user).status_code == 429
            outage.cut()
            # Both streams run to their end while Redis is unreachable: the releases fail.
            for _, response in streams:
                lines = [json.loads(line) for line in response.iter_lines() if line]
                assert lines[-1]["done"] is True
        finally:
            for client, response in streams:
                response.close()
                client.close()
        time.sleep(0.5)
        outage.restore()
        waited = admitted_within(proxy, user, scaled(5))
        # The generation just admitted gives its own slot back once it has answered.
        wait_until(lambda: slots_held(user) == 0, timeout=3)
    assert waited < scaled(5)


def test_a_killed_replica_frees_its_slots_within_the_lease(proxy_factory, simulator,
                                                            sim) -> None:
    # Its answer (25 tokens) takes twelve seconds: it outlives the lease several times over.
    sim.configure(tokens_per_second=2)
    env = {"OLLAMA_URL": simulator.url, "REDIS_URL": REDIS, "PROXY_CONCURRENCY_LIMIT": "2",
           "PROXY_RATE_LIMIT": "1000/minute", "PROXY_CONCURRENCY_LEASE_SECONDS": str(LEASE)}
    doomed, survivor = proxy_factory(**env), proxy_factory(**env)
    user = fresh_user()
    streams = [open_stream(doomed, user, tokens=400) for _ in range(2)]
    try:
        assert [response.status_code for _, response in streams] == [200, 200]
        # Longer than the lease: the running streams renew their slots, so they stay held.
        time.sleep(LEASE + 1)
        refused = generate(survivor, user)
        assert refused.status_code == 429, refused.text
        # The truth about when a slot can free: the earliest lease expiry, never longer.
        assert 1 <= int(refused.headers["retry-after"]) <= LEASE
        assert slots_held(user) == 2
        doomed.process.kill()
        doomed.process.wait()
        waited = admitted_within(survivor, user, scaled(LEASE + 3))
    finally:
        for client, response in streams:
            response.close()
            client.close()
    assert waited <= scaled(LEASE + 3)


USERS, STREAMS_PER_USER, WAVES = 8, 25, 3


async def _stream_once(client: httpx.AsyncClient, user: str) -> str | None:
    """One streamed generation read to its end; None if it ended well, else what went wrong."""
    try:
        async with client.stream("POST", "/api/llm/generate", headers=auth(user),
                                 json={"model": "llama3.2", "prompt": "load",
                                       "options": {"num_predict": 10}}) as response:
            if response.status_code != 200:
                return f"{response.status_code} {(await response.aread()).decode()[:200]}"
            last = ""
            async for line in response.aiter_lines():
                last = line or last
            end = json.loads(last)
            return None if end.get("done") and "error" not in end else last[:200]
    except httpx.HTTPError as exc:
        return f"{type(exc).__name__}: {exc}"


async def _waves(proxy: ProxyProcess, users: list[str]) -> list[str]:
    problems: list[str] = []
    # A connection per request: none is reused just as the proxy closes it for being idle.
    limits = httpx.Limits(max_connections=USERS * STREAMS_PER_USER + 10,
                          max_keepalive_connections=0)
    async with httpx.AsyncClient(base_url=proxy.url, timeout=scaled(60), limits=limits) as client:
        for _ in range(WAVES):
            outcomes = await asyncio.gather(*(_stream_once(client, user) for user in users
                                              for _ in range(STREAMS_PER_USER)))
            problems += [outcome for outcome in outcomes if outcome is not None]
    return problems


def test_two_hundred_streams_at_once_neither_fail_nor_leak_slots(proxy_factory, simulator,
                                                                  sim) -> None:
    # One second per stream, every one of them running at once in the simulator.
    sim.configure(tokens_per_second=10, num_parallel=USERS * STREAMS_PER_USER)
    proxy = proxy_factory(OLLAMA_URL=simulator.url, REDIS_URL=REDIS,
                          PROXY_CONCURRENCY_LIMIT=str(STREAMS_PER_USER),
                          PROXY_RATE_LIMIT="100000/minute")
    users = [fresh_user() for _ in range(USERS)]
    started = time.monotonic()
    problems = asyncio.run(asyncio.wait_for(_waves(proxy, users), scaled(50)))
    assert problems == [], f"{len(problems)} of {USERS * STREAMS_PER_USER * WAVES}: {problems[:5]}"
    wait_until(lambda: all(slots_held(user) == 0 for user in users), timeout=5)
    assert counted(proxy, "llm_proxy_limiter_backend_errors_total") == 0
    assert time.monotonic() - started < scaled(50)
