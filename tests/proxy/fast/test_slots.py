"""Concurrency slot leases in the real Redis, driven directly: a renewal extends what is held and
never brings back what was given back; a refusal says when the earliest lease runs out. (Leases
under a Redis outage, a killed replica and load: tests/proxy/test_slot_leases.py.)"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from proxy.core.slots import SharedSlots

REDIS = "redis://127.0.0.1:6379/0"
LEASE = 5


@pytest.fixture
async def redis() -> AsyncIterator[Redis]:
    client = Redis.from_url(REDIS)
    yield client
    await client.aclose()


@pytest.fixture
async def slots(redis: Redis) -> AsyncIterator[SharedSlots]:
    shared = SharedSlots(redis, LEASE)
    yield shared
    await shared.aclose()


def fresh_key() -> str:
    return f"llm-proxy:slots:test-{uuid.uuid4().hex[:10]}"


async def test_a_renewal_extends_the_held_leases(slots: SharedSlots, redis: Redis) -> None:
    key = fresh_key()
    assert await slots.acquire(key, "a", 2) is None
    [(_, first)] = await redis.zrange(key, 0, -1, withscores=True)
    time.sleep(0.05)
    await slots.renew()
    [(_, renewed)] = await redis.zrange(key, 0, -1, withscores=True)
    assert renewed > first
    assert await redis.pttl(key) > LEASE * 1000


async def test_a_renewal_never_brings_back_a_released_slot(slots: SharedSlots,
                                                           redis: Redis) -> None:
    key = fresh_key()
    assert await slots.acquire(key, "a", 2) is None
    assert await slots.acquire(key, "b", 2) is None
    # Another replica's view: "b" has already gone (released, or lapsed in an outage).
    await redis.zrem(key, "b")
    await slots.renew()
    assert await redis.zrange(key, 0, -1) == [b"a"]
    await slots.release(key, "a")
    await slots.renew()
    assert await redis.zcard(key) == 0
    # This process still counts "b" until its own generation gives it back.
    assert slots.held == 1
    await slots.release(key, "b")
    assert slots.held == 0


async def test_a_refusal_says_when_the_earliest_lease_runs_out(slots: SharedSlots,
                                                               redis: Redis) -> None:
    key = fresh_key()
    assert await slots.acquire(key, "a", 1) is None
    wait = await slots.acquire(key, "b", 1)
    assert wait is not None
    assert LEASE - 1 < wait <= LEASE
    await slots.release(key, "a")
    assert await slots.acquire(key, "b", 1) is None
