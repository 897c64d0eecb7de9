"""Admission in the real Redis, driven directly (proxy/core/admission.py, proxy/core/slots.py):
a renewal extends what is held and never brings back what was given back; a refusal says when
the earliest lease runs out; the rate windows and the slots are taken in one script, a refused
request is counted in no window and keeps no slot, and the windows are those `limits` reads.
(Leases under a Redis outage, a killed replica and load: tests/proxy/test_slot_leases.py.)"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from proxy.core.admission import SharedAdmission, Window
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


@pytest.fixture
def admission(redis: Redis) -> SharedAdmission:
    return SharedAdmission(redis, LEASE)


def fresh_key() -> str:
    return f"llm-proxy:slots:test-{uuid.uuid4().hex[:10]}"


class Taker:
    """Takes slots as a generation's admission does: the script, then renewal by SharedSlots."""

    def __init__(self, admission: SharedAdmission, slots: SharedSlots) -> None:
        self.admission, self.slots = admission, slots

    async def acquire(self, key: str, slot: str, cap: int) -> float | None:
        asked = time.monotonic()
        outcome = await self.admission.admit([], [(key, cap)], slot)
        if outcome.refused_slots is not None:
            return outcome.wait
        self.slots.track(key, slot, asked)
        return None


@pytest.fixture
def taker(admission: SharedAdmission, slots: SharedSlots) -> Taker:
    return Taker(admission, slots)


async def test_a_renewal_extends_the_held_leases(slots: SharedSlots, taker: Taker,
                                                 redis: Redis) -> None:
    key = fresh_key()
    assert await taker.acquire(key, "a", 2) is None
    [(_, first)] = await redis.zrange(key, 0, -1, withscores=True)
    time.sleep(0.05)
    await slots.renew()
    [(_, renewed)] = await redis.zrange(key, 0, -1, withscores=True)
    assert renewed > first
    assert await redis.pttl(key) > LEASE * 1000


async def test_a_renewal_never_brings_back_a_released_slot(slots: SharedSlots, taker: Taker,
                                                           redis: Redis) -> None:
    key = fresh_key()
    assert await taker.acquire(key, "a", 2) is None
    assert await taker.acquire(key, "b", 2) is None
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


async def test_a_refusal_says_when_the_earliest_lease_runs_out(slots: SharedSlots, taker: Taker,
                                                               redis: Redis) -> None:
    key = fresh_key()
    assert await taker.acquire(key, "a", 1) is None
    wait = await taker.acquire(key, "b", 1)
    assert wait is not None
    assert LEASE - 1 < wait <= LEASE
    await slots.release(key, "a")
    assert await taker.acquire(key, "b", 1) is None


def fresh_window(limit: int, seconds: int = 60) -> Window:
    return Window(f"LIMITER/user/test-{uuid.uuid4().hex[:10]}/{limit}/1/minute", limit, seconds)


async def test_a_request_is_counted_in_each_window_and_takes_each_slot(
        admission: SharedAdmission, redis: Redis) -> None:
    minute, hour = fresh_window(3), fresh_window(5, 3600)
    users, keys = fresh_key(), fresh_key()
    for n in (1, 2, 3):
        outcome = await admission.admit([minute, hour], [(users, 10), (keys, 10)], f"s{n}")
        assert outcome.refused_window is None and outcome.refused_slots is None
        assert [f.hits for f in outcome.windows] == [n, n]
        assert all(abs(f.oldest - time.time()) < 30 for f in outcome.windows)
    assert await redis.zcard(users) == 3 and await redis.zcard(keys) == 3
    # The minute's window is full: refused, and counted in neither window, no slot taken.
    refused = await admission.admit([minute, hour], [(users, 10)], "s4")
    assert refused.refused_window == 0
    assert refused.windows[0].hits == 3
    assert await redis.llen(f"LIMITS:{hour.key}") == 3
    assert await redis.zcard(users) == 3


async def test_a_full_slot_set_gives_back_the_slots_taken_before_it(
        admission: SharedAdmission, redis: Redis) -> None:
    window, users, keys = fresh_window(10), fresh_key(), fresh_key()
    assert (await admission.admit([window], [(users, 5), (keys, 1)], "a")).refused_slots is None
    refused = await admission.admit([window], [(users, 5), (keys, 1)], "b")
    assert refused.refused_slots == 1
    assert LEASE - 1 < refused.wait <= LEASE
    assert await redis.zrange(users, 0, -1) == [b"a"]
    # Refused for concurrency, the request still counts in the rate window, as it always did.
    assert await redis.llen(f"LIMITS:{window.key}") == 2


async def test_the_windows_are_those_limits_reads(admission: SharedAdmission) -> None:
    from limits import RateLimitItemPerMinute
    from limits.aio.strategies import MovingWindowRateLimiter
    from limits.storage import storage_from_string

    item = RateLimitItemPerMinute(4)
    user = f"test-{uuid.uuid4().hex[:10]}"
    window = Window(item.key_for("user", user), item.amount, item.get_expiry())
    for n in range(3):
        await admission.admit([window], [], f"s{n}")
    storage = storage_from_string(f"async+{REDIS}", implementation="redispy")
    reader = MovingWindowRateLimiter(storage)  # type: ignore[arg-type]
    stats = await reader.get_window_stats(item, "user", user)
    assert stats.remaining == 1
    assert await reader.hit(item, "user", user)  # limits' own hit in the same window
    refused = await admission.admit([window], [], "s4")
    assert refused.refused_window == 0 and refused.windows[0].hits == 4
