"""Per-user limits on generation: a request rate (moving window) and a cap on concurrent
generations. A request made with an API key that has limits of its own is held to those too,
in buckets of the key's own, besides its owner's (a key never lifts its owner's limits).

The rate is a moving window: in Redis when `REDIS_URL` is set (the `limits` library), so that
every proxy replica on one Redis shares the same window; otherwise in process memory
(`LocalWindow`, below: `limits`' own in-memory storage hands work to a thread on every hit).
`limits` has no concurrency primitive, so the concurrency cap is written here: a set of held
slots in memory, or in Redis leases that the holding process renews while the generation runs
(`core/slots.py`: a process that dies frees its slots within `PROXY_CONCURRENCY_LEASE_SECONDS`,
a failed release is retried). Every acquisition gets a slot name of its own (the server's
request id plus a random suffix), so no two generations can ever hold, or give back, the same
slot. Both share one
bounded, blocking pool of Redis connections (`core/redis_client.py`).

A concurrency refusal (429) says when to retry: in Redis, when the earliest of the user's leases
runs out (the longest a slot can stay taken once its holder is gone); in memory, where no slot
can outlive its generation, one second.

Redis unreachable: `PROXY_LIMITER_FAILURE_MODE=closed` (default) refuses with 503;
`open` admits, logs and counts.
"""

from __future__ import annotations

import logging
import math
import secrets
import time
from collections import deque
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from limits import RateLimitItem, RateLimitItemPerMinute, WindowStats, parse_many
from limits.aio.storage import Storage
from limits.aio.strategies import MovingWindowRateLimiter
from limits.storage import storage_from_string
from redis.asyncio import Redis

from proxy.core.errors import ProxyError
from proxy.core.metrics import ProxyMetrics
from proxy.core.redis_client import redis_client
from proxy.core.security import Principal
from proxy.core.settings import Settings
from proxy.core.slots import SharedSlots
from proxy.core.spend import SpendLedger
from proxy.core.token_limits import TokenCounter, TokenMeter, token_windows

log = logging.getLogger("proxy.limits")

Release = Callable[[], Coroutine[Any, Any, None]]

# In memory a slot frees the moment its generation ends and none can be orphaned: retry soon.
LOCAL_RETRY_SECONDS = 1.0


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


class LocalWindow:
    """A moving window in process memory, with the two calls the Limiter makes of `limits`'
    MovingWindowRateLimiter, for one process (no lock: nothing here awaits).

    Each (limit, user) keeps the times of its admitted hits, oldest first; a hit drops those
    that have left the window and is admitted if fewer than the limit remain. Unlike `limits`'
    in-memory storage, no hit hands work to a thread (it schedules an expiry sweep through
    `asyncio.to_thread` on every hit) and none inserts at the front of a list as long as the
    window (a cost that grows with the limit). A user's deque is dropped once it is empty.
    """

    def __init__(self) -> None:
        self._hits: dict[tuple[str, str], deque[float]] = {}

    def _current(self, item: RateLimitItem, user: str, now: float) -> deque[float]:
        key = (item.key_for(), user)
        hits = self._hits.get(key)
        if hits is None:
            hits = self._hits[key] = deque()
        horizon = now - item.get_expiry()
        while hits and hits[0] <= horizon:
            hits.popleft()
        return hits

    async def hit(self, item: RateLimitItem, scope: str, user: str) -> bool:
        now = time.time()
        hits = self._current(item, user, now)
        if len(hits) >= item.amount:
            return False
        hits.append(now)
        return True

    async def get_window_stats(self, item: RateLimitItem, scope: str, user: str
                               ) -> WindowStats:
        now = time.time()
        hits = self._current(item, user, now)
        if not hits:
            del self._hits[(item.key_for(), user)]
            return WindowStats(now + item.get_expiry(), item.amount)
        return WindowStats(hits[0] + item.get_expiry(), item.amount - len(hits))


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
        self._slots: SharedSlots | None = None
        self._window: MovingWindowRateLimiter | LocalWindow
        if settings.redis_url:
            self._redis = redis_client(settings)
            # The rate window shares the limiter's bounded pool. `limits` documents the
            # `connection_pool` option, though its annotation admits only scalar options.
            storage = storage_from_string(
                "async+" + settings.redis_url, implementation="redispy",
                connection_pool=self._redis.connection_pool,  # type: ignore[arg-type]
            )
            assert isinstance(storage, Storage)  # "async+" URLs give the asyncio storage
            self._window = MovingWindowRateLimiter(storage)
            self._slots = SharedSlots(self._redis, settings.proxy_concurrency_lease_seconds)
        else:
            self._window = LocalWindow()
        self.tokens = TokenCounter(self._redis)
        self.spend = SpendLedger(self._redis, self._slots,
                                 settings.proxy_concurrency_lease_seconds)
        self._local_slots: dict[str, set[str]] = {}

    @property
    def shared(self) -> bool:
        return self._redis is not None

    async def aclose(self) -> None:
        if self._slots is not None:
            await self._slots.aclose()
        if self._redis is not None:
            await self._redis.aclose()

    def _rate_items(self, user: Principal) -> list[tuple[RateLimitItem, str, str]]:
        """Each window the request counts in: (limit, namespace, whose)."""
        s = self._settings
        spec = s.proxy_rate_limit_users.get(user.sub) or s.proxy_rate_limit_roles.get(
            user.role) or s.proxy_rate_limit
        items = [(item, "user", user.sub) for item in parse_many(spec)]
        if user.key is not None and user.key.rate_limit_per_minute is not None:
            items.append((RateLimitItemPerMinute(user.key.rate_limit_per_minute), "key",
                          user.key.id))
        return items

    def concurrency_for(self, user: Principal) -> int:
        s = self._settings
        return s.proxy_concurrency_limit_users.get(user.sub) or \
            s.proxy_concurrency_limit_roles.get(user.role) or s.proxy_concurrency_limit

    def backend_failed(self, exc: Exception, what: str) -> None:
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
            for item, namespace, whose in self._rate_items(user):
                allowed = await self._window.hit(item, namespace, whose)
                stats = await self._window.get_window_stats(item, namespace, whose)
                if not allowed:
                    self._metrics.rate_limited.labels(limit="rate").inc()
                    per = (f"{item.multiples} {item.GRANULARITY.name}s" if item.multiples > 1
                           else item.GRANULARITY.name)
                    of_key = " for this API key" if namespace == "key" else ""
                    raise RateLimitExceeded(
                        f"rate limit exceeded{of_key}: {item.amount} requests per {per}",
                        item.amount, stats.remaining, stats.reset_time)
                if decision is None or stats.remaining < decision.remaining:
                    decision = RateDecision(item.amount, stats.remaining, stats.reset_time)
        except ProxyError:
            raise
        except Exception as exc:
            self.backend_failed(exc, "rate limit")
            return None
        return decision

    async def check_tokens(self, user: Principal) -> TokenMeter:
        """Refuse (QuotaExceeded) if one of the user's token windows is spent; otherwise the
        meter that counts the generation into them (`core/token_limits.py`)."""
        windows = token_windows(self._settings, user)
        meter = TokenMeter(self.tokens, windows, self._settings.proxy_token_count_every,
                           self._count_failed)
        if not windows:
            return meter
        now = time.time()
        try:
            await self.tokens.ensure_rebuilt(now)
            totals = await self.tokens.totals(windows, now)
        except Exception as exc:
            self.backend_failed(exc, "token limit")
            return meter
        for window, total in zip(windows, totals, strict=True):
            if total >= window.limit:
                self._metrics.rate_limited.labels(limit="tokens").inc()
                raise window.spent(now)
        return meter

    def _count_failed(self, exc: Exception) -> None:
        # Mid-stream: counted, logged, and the generation goes on whatever the failure mode.
        self._metrics.limiter_errors.labels(mode="open").inc()
        log.warning("could not count tokens in Redis (%s: %s); the stream goes on",
                    type(exc).__name__, exc)

    async def acquire(self, user: Principal, request_id: str) -> Release:
        """Take a concurrency slot (and one of the API key's, if it has a cap of its own); the
        returned coroutine function gives them back.

        `request_id` only labels the slot (for diagnostics): the slot's name is unique even if
        two callers pass the same id, because a set member added twice is one slot.
        """
        slot = f"{request_id}:{secrets.token_hex(8)}"
        release_user = await self._acquire_one(f"llm-proxy:slots:{user.sub}",
                                               self.concurrency_for(user), slot, "per user")
        if user.key is None or user.key.concurrency_limit is None:
            return release_user
        try:
            release_key = await self._acquire_one(f"llm-proxy:key-slots:{user.key.id}",
                                                  user.key.concurrency_limit, slot,
                                                  "for this API key")
        except BaseException:
            await release_user()
            raise

        async def release_both() -> None:
            try:
                await release_key()
            finally:
                await release_user()

        return release_both

    async def _acquire_one(self, key: str, cap: int, slot: str, per: str) -> Release:
        """One slot in the set `key` (in Redis, or its namesake in memory)."""
        if self._slots is None:
            slots = self._local_slots.setdefault(key, set())
            if len(slots) >= cap:
                self._concurrency_refused(cap, LOCAL_RETRY_SECONDS, per)
            slots.add(slot)

            async def release_local() -> None:
                slots.discard(slot)

            return release_local
        shared = self._slots
        try:
            wait = await shared.acquire(key, slot, cap)
        except Exception as exc:
            self.backend_failed(exc, "concurrency")

            async def nothing() -> None:
                return None

            return nothing
        if wait is not None:
            self._concurrency_refused(cap, wait, per)

        async def release_shared() -> None:
            await shared.release(key, slot)

        return release_shared

    def _concurrency_refused(self, cap: int, retry_after: float, per: str) -> None:
        self._metrics.rate_limited.labels(limit="concurrency").inc()
        raise RateLimitExceeded(
            f"too many generations at once: at most {cap} {per}; wait for one to finish",
            cap, 0, time.time() + retry_after)

    async def ping(self) -> None:
        """Raise if the shared storage cannot be reached (no-op without Redis)."""
        if self._redis is not None:
            await self._redis.ping()
