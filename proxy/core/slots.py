"""Concurrency slots shared through Redis: leases renewed while a generation runs, releases
retried until they succeed.

A user's slots are one sorted set, `llm-proxy:slots:<user>`, whose members are slot names scored
by when their lease runs out, on Redis's own clock (replicas need not agree on the time).
Taking a slot is part of one Lua script (drop lapsed leases, count, add; `core/admission.py`),
so it is atomic across replicas.

- **Leases.** A lease lasts PROXY_CONCURRENCY_LEASE_SECONDS. One task per process renews every
  slot the process holds, every third of a lease, in one round trip. A process that dies
  (`kill -9`, a lost host) stops renewing, and its slots free within one lease.
- **Releases.** A release that cannot reach Redis is retried in the background, with backoff,
  until it gets through or the lease has lapsed by itself (it is no longer renewed).
- **Renewals never resurrect.** A renewal extends only slots that are still there (`ZADD XX`):
  a released slot stays released even if a renewal crosses its release, and a slot that lapsed
  during an outage longer than a lease is not taken back (for the rest of that generation the
  user may start one more than the cap).
- **Refusals.** A user who holds every slot is told how long until the earliest of their leases
  runs out: the longest a slot can stay taken once its holder is gone. A generation that ends
  frees its slot at once, so a retry may well succeed sooner.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Coroutine
from typing import Any

from redis.asyncio import Redis

log = logging.getLogger("proxy.limits")

# ARGV: the lease, then the slots to renew -> how many of them were still held.
RENEW_SCRIPT = """
local t = redis.call('TIME')
local lease = tonumber(ARGV[1])
local expiry = tonumber(t[1]) + tonumber(t[2]) / 1000000 + lease
local held = 0
for i = 2, #ARGV do
  held = held + redis.call('ZADD', KEYS[1], 'XX', 'CH', expiry, ARGV[i])
end
if held > 0 then
  redis.call('PEXPIRE', KEYS[1], math.ceil(lease * 1000) + 60000)
end
return held
"""

# Between two tries of a failed release: doubling from the first, never more than the last.
RELEASE_RETRY_SECONDS = (0.1, 2.0)


class SharedSlots:
    def __init__(self, redis: Redis, lease_seconds: float) -> None:
        self._redis = redis
        self.lease = lease_seconds
        self._renew = redis.register_script(RENEW_SCRIPT)
        # key -> slot -> when its lease runs out at the latest (monotonic), as last renewed.
        self._held: dict[str, dict[str, float]] = {}
        self._renewer: asyncio.Task[None] | None = None
        self._background: set[asyncio.Task[None]] = set()

    @property
    def held(self) -> int:
        return sum(len(slots) for slots in self._held.values())

    def track(self, key: str, slot: str, asked: float) -> None:
        """Renew `slot` of `key` until it is released: taken by a script that takes leases in
        this shape (a generation's admission, `core/admission.py`; a budget's hold,
        `core/spend.py`) at `asked` (monotonic)."""
        self._held.setdefault(key, {})[slot] = asked + self.lease
        if self._renewer is None or self._renewer.done():
            self._renewer = asyncio.create_task(self._renew_while_open(),
                                                name="concurrency slot renewal")

    def untrack(self, key: str, slot: str) -> None:
        """Stop renewing `slot`: a script has removed it from Redis itself."""
        slots = self._held.get(key, {})
        slots.pop(slot, None)
        if not slots:
            self._held.pop(key, None)

    async def release(self, key: str, slot: str) -> None:
        """Give `slot` back; if Redis cannot be reached, keep trying in the background."""
        lapses_at = self._held.get(key, {}).get(slot)
        self.untrack(key, slot)
        try:
            await self._redis.zrem(key, slot)
        except Exception as exc:
            if lapses_at is None:
                return
            log.warning("could not release a concurrency slot in Redis (%s: %s); retrying "
                        "for up to %.0f s, when its lease lapses", type(exc).__name__, exc,
                        lapses_at - time.monotonic())
            self._spawn(self._release_later(key, slot, lapses_at))

    async def renew(self) -> None:
        """Extend the lease of every slot this process holds, in one round trip."""
        held = {key: list(slots) for key, slots in self._held.items()}
        if not held:
            return
        asked = time.monotonic()
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                for key, slots in held.items():
                    await self._renew(keys=[key], args=[self.lease, *slots], client=pipe)
                kept = await pipe.execute()
        except Exception as exc:
            log.warning("could not renew %d concurrency slot leases in Redis (%s: %s); each "
                        "lapses unless a renewal gets through in time",
                        sum(map(len, held.values())), type(exc).__name__, exc)
            return
        for (key, slots), still_held in zip(held.items(), kept, strict=True):
            if int(still_held) < len(slots):
                log.warning("%d concurrency slot leases had lapsed in Redis before they could "
                            "be renewed", len(slots) - int(still_held))
            current = self._held.get(key, {})
            for slot in slots:
                if slot in current:
                    current[slot] = asked + self.lease

    async def aclose(self) -> None:
        tasks = [*self._background, *([self._renewer] if self._renewer else [])]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _renew_while_open(self) -> None:
        while self._held:
            await asyncio.sleep(self.lease / 3)
            await self.renew()

    async def _release_later(self, key: str, slot: str, lapses_at: float) -> None:
        delay, longest = RELEASE_RETRY_SECONDS
        while time.monotonic() + delay < lapses_at:
            await asyncio.sleep(delay)
            try:
                await self._redis.zrem(key, slot)
            except Exception:
                delay = min(delay * 2, longest)
                continue
            log.info("released a concurrency slot in Redis on a retry")
            return
        log.warning("gave up releasing a concurrency slot in Redis: its lease has lapsed")

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(work)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
