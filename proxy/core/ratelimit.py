"""Per-user limits on generation: a request rate (moving window) and a cap on concurrent
generations.

The rate uses the `limits` library: in-process memory by default, Redis when `REDIS_URL` is set,
so that every proxy replica on one Redis shares the same window. `limits` has no concurrency
primitive, so the concurrency cap is written here: a set of held slots in memory, or in Redis a
sorted set per user whose members are slot names scored by a lease expiry (a process that dies
cannot hold a slot past `PROXY_CONCURRENCY_LEASE_SECONDS`); acquisition is one Lua script, so it
is atomic across replicas. Every acquisition gets a slot name of its own (the server's request
id plus a random suffix), so no two generations can ever hold, or give back, the same slot.

Redis unreachable: `PROXY_LIMITER_FAILURE_MODE=closed` (default) refuses with 503;
`open` admits, logs and counts.
"""

from __future__ import annotations

import logging
import math
import secrets
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from limits import RateLimitItem, parse_many
from limits.aio.storage import MemoryStorage, Storage
from limits.aio.strategies import MovingWindowRateLimiter
from limits.storage import storage_from_string
from redis.asyncio import Redis

from proxy.core.errors import ProxyError
from proxy.core.metrics import ProxyMetrics
from proxy.core.security import Principal
from proxy.core.settings import Settings

log = logging.getLogger("proxy.limits")

Release = Callable[[], Coroutine[Any, Any, None]]

ACQUIRE_SCRIPT = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
if redis.call('ZCARD', KEYS[1]) < tonumber(ARGV[2]) then
  redis.call('ZADD', KEYS[1], ARGV[3], ARGV[4])
  redis.call('EXPIRE', KEYS[1], ARGV[5])
  return 1
end
return 0
"""


class RateLimitExceeded(ProxyError):
    status_code = 429
    code = "rate_limit_exceeded"

    def __init__(self, message: str, limit: int, remaining: int, reset_at: float) -> None:
        super().__init__(message)
        self.limit = limit
        self.remaining = remaining
        self.reset_at = reset_at

    def headers(self) -> dict[str, str]:
        return rate_headers(self.limit, self.remaining, self.reset_at, retry=True)


class LimiterUnavailable(ProxyError):
    status_code = 503

    def headers(self) -> dict[str, str]:
        return {"Retry-After": "5"}


def rate_headers(limit: int, remaining: int, reset_at: float, retry: bool = False
                 ) -> dict[str, str]:
    headers = {
        "X-RateLimit-Limit": str(limit),
        "X-RateLimit-Remaining": str(max(0, remaining)),
        "X-RateLimit-Reset": str(math.ceil(reset_at)),
    }
    if retry:
        headers["Retry-After"] = str(max(1, math.ceil(reset_at - time.time())))
    return headers


@dataclass
class RateDecision:
    limit: int
    remaining: int
    reset_at: float

    def headers(self) -> dict[str, str]:
        return rate_headers(self.limit, self.remaining, self.reset_at)


class Limiter:
    def __init__(self, settings: Settings, metrics: ProxyMetrics) -> None:
        self._settings = settings
        self._metrics = metrics
        self._redis: Redis | None = None
        self._storage: Storage
        if settings.redis_url:
            storage = storage_from_string(
                "async+" + settings.redis_url, implementation="redispy",
                socket_connect_timeout=2, socket_timeout=2,
            )
            assert isinstance(storage, Storage)  # "async+" URLs give the asyncio storage
            self._storage = storage
            self._redis = Redis.from_url(settings.redis_url, socket_connect_timeout=2,
                                         socket_timeout=2)
            self._acquire = self._redis.register_script(ACQUIRE_SCRIPT)
        else:
            self._storage = MemoryStorage()
        self._window = MovingWindowRateLimiter(self._storage)
        self._local_slots: dict[str, set[str]] = {}

    @property
    def shared(self) -> bool:
        return self._redis is not None

    async def aclose(self) -> None:
        if self._redis is not None:
            await self._redis.aclose()

    def _rate_items(self, user: Principal) -> list[RateLimitItem]:
        s = self._settings
        spec = s.proxy_rate_limit_users.get(user.sub) or s.proxy_rate_limit_roles.get(
            user.role) or s.proxy_rate_limit
        return parse_many(spec)

    def concurrency_for(self, user: Principal) -> int:
        s = self._settings
        return s.proxy_concurrency_limit_users.get(user.sub) or \
            s.proxy_concurrency_limit_roles.get(user.role) or s.proxy_concurrency_limit

    def _backend_failed(self, exc: Exception, what: str) -> None:
        mode = self._settings.proxy_limiter_failure_mode
        self._metrics.limiter_errors.labels(mode=mode).inc()
        log.warning("%s check could not reach Redis (%s: %s); failing %s", what,
                    type(exc).__name__, exc, mode)
        if mode == "closed":
            raise LimiterUnavailable(
                "rate limiter unavailable: cannot reach Redis; try again shortly") from exc

    async def hit(self, user: Principal) -> RateDecision | None:
        """Count one request; raise RateLimitExceeded when over. None if admitted blind."""
        decision: RateDecision | None = None
        try:
            for item in self._rate_items(user):
                allowed = await self._window.hit(item, "user", user.sub)
                stats = await self._window.get_window_stats(item, "user", user.sub)
                if not allowed:
                    self._metrics.rate_limited.labels(limit="rate").inc()
                    per = (f"{item.multiples} {item.GRANULARITY.name}s" if item.multiples > 1
                           else item.GRANULARITY.name)
                    raise RateLimitExceeded(
                        f"rate limit exceeded: {item.amount} requests per {per}",
                        item.amount, stats.remaining, stats.reset_time)
                if decision is None or stats.remaining < decision.remaining:
                    decision = RateDecision(item.amount, stats.remaining, stats.reset_time)
        except ProxyError:
            raise
        except Exception as exc:
            self._backend_failed(exc, "rate limit")
            return None
        return decision

    async def acquire(self, user: Principal, request_id: str) -> Release:
        """Take a concurrency slot; the returned coroutine function gives it back.

        `request_id` only labels the slot (for diagnostics): the slot's name is unique even if
        two callers pass the same id, because a set member added twice is one slot.
        """
        cap = self.concurrency_for(user)
        slot = f"{request_id}:{secrets.token_hex(8)}"
        if self._redis is None:
            slots = self._local_slots.setdefault(user.sub, set())
            if len(slots) >= cap:
                self._concurrency_refused(cap)
            slots.add(slot)

            async def release_local() -> None:
                slots.discard(slot)

            return release_local
        key = f"llm-proxy:slots:{user.sub}"
        lease = self._settings.proxy_concurrency_lease_seconds
        now = time.time()
        try:
            got = await self._acquire(keys=[key],
                                      args=[now, cap, now + lease, slot, lease + 60])
        except Exception as exc:
            self._backend_failed(exc, "concurrency")

            async def nothing() -> None:
                return None

            return nothing
        if not got:
            self._concurrency_refused(cap)
        redis = self._redis

        async def release_shared() -> None:
            try:
                await redis.zrem(key, slot)
            except Exception as exc:  # the lease expiry frees it eventually
                log.warning("could not release a concurrency slot in Redis: %s", exc)

        return release_shared

    def _concurrency_refused(self, cap: int) -> None:
        self._metrics.rate_limited.labels(limit="concurrency").inc()
        raise RateLimitExceeded(
            f"too many generations at once: at most {cap} per user; wait for one to finish",
            cap, 0, time.time() + 1)

    async def ping(self) -> None:
        """Raise if the shared storage cannot be reached (no-op without Redis)."""
        if self._redis is not None:
            await self._redis.ping()
