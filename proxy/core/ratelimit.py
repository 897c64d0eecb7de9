"""Per-user limits on generation: a request rate (moving window) and a cap on concurrent
generations. A request made with an API key that has limits of its own is held to those too,
in buckets of the key's own, besides its owner's (a key never lifts its owner's limits).

The rate is a moving window, its limits written as `limits` parses them ("10/minute;100/hour"):
in Redis when `REDIS_URL` is set, so that every proxy replica on one Redis shares the same
window; otherwise in process memory (`LocalWindow`, below: `limits`' own in-memory storage hands
work to a thread on every hit). The concurrency cap is a set of held slots in memory, or in
Redis leases that the holding process renews while the generation runs (`core/slots.py`: a
process that dies frees its slots within `PROXY_CONCURRENCY_LEASE_SECONDS`, a failed release is
retried). Every acquisition gets a slot name of its own (the server's request id plus a random
suffix), so no two generations can ever hold, or give back, the same slot.

In Redis, one Lua script counts the request in its windows and takes its slots
(`core/admission.py`): one round trip, where `limits`' own moving window took two (the hit,
then the figures for the headers) before the slot's. It keeps the windows in `limits`' layout
and under its keys. Everything shares one bounded, blocking pool of Redis connections
(`core/redis_client.py`).

A concurrency refusal (429) says when to retry: in Redis, when the earliest of the user's leases
runs out (the longest a slot can stay taken once its holder is gone); in memory, where no slot
can outlive its generation, one second.

Redis unreachable: `PROXY_LIMITER_FAILURE_MODE=closed` (default) refuses with 503;
`open` admits, logs and counts.
"""

from __future__ import annotations

import functools
import logging
import math
import secrets
import time
from collections import deque
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from limits import RateLimitItem, RateLimitItemPerMinute, WindowStats, parse_many
from redis.asyncio import Redis

from proxy.core.admission import SharedAdmission, Window
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
    """A moving window in process memory, for one process (no lock: nothing here awaits).

    Each (limit, user) keeps the times of its admitted hits, oldest first; a hit drops those
    that have left the window and is admitted if fewer than the limit remain. Unlike `limits`'
    in-memory storage, no hit hands work to a thread (it schedules an expiry sweep through
    `asyncio.to_thread` on every hit) and none inserts at the front of a list as long as the
    window (a cost that grows with the limit). Every SWEEP_EVERY hits, the windows nobody has
    hit for their whole length are dropped, so that users who have gone cost no memory.
    """

    SWEEP_EVERY = 4096

    def __init__(self) -> None:
        # (whose, limit) -> (the window's length in seconds, its hits)
        self._hits: dict[tuple[str, str], tuple[int, deque[float]]] = {}
        self._since_sweep = 0

    def _current(self, item: RateLimitItem, key: str, now: float) -> deque[float]:
        found = self._hits.get((key, item.key_for()))
        if found is None:
            found = self._hits[(key, item.key_for())] = (item.get_expiry(), deque())
        length, hits = found
        horizon = now - length
        while hits and hits[0] <= horizon:
            hits.popleft()
        return hits

    def full(self, item: RateLimitItem, key: str) -> WindowStats | None:
        """The window's figures if it is full (the request would be refused), else None."""
        now = time.time()
        hits = self._current(item, key, now)
        if len(hits) >= item.amount:
            return WindowStats(hits[0] + item.get_expiry(), 0)
        return None

    def hit(self, item: RateLimitItem, key: str) -> WindowStats:
        """Count a hit (the window is not full: `full` said so); the window's figures."""
        now = time.time()
        hits = self._current(item, key, now)
        hits.append(now)
        self._since_sweep += 1
        if self._since_sweep >= self.SWEEP_EVERY:
            self._sweep(now)
        return WindowStats(hits[0] + item.get_expiry(), item.amount - len(hits))

    def _sweep(self, now: float) -> None:
        self._since_sweep = 0
        for key, (length, hits) in list(self._hits.items()):
            if not hits or hits[-1] <= now - length:
                del self._hits[key]

    @property
    def windows(self) -> int:
        """How many windows are kept (for tests)."""
        return len(self._hits)


@functools.lru_cache(maxsize=256)
def parsed_rates(spec: str) -> tuple[RateLimitItem, ...]:
    """`limits`' items for a rate limit setting ("10/minute;100/hour"), parsed once: the
    settings name a handful of them (validated at startup), and every request needs one."""
    return tuple(parse_many(spec))


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
        self._admission: SharedAdmission | None = None
        self._window = LocalWindow()
        if settings.redis_url:
            self._redis = redis_client(settings)
            lease = settings.proxy_concurrency_lease_seconds
            self._slots = SharedSlots(self._redis, lease)
            self._admission = SharedAdmission(self._redis, lease)
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
        items = [(item, "user", user.sub) for item in parsed_rates(spec)]
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

    async def admit(self, user: Principal, request_id: str
                    ) -> tuple[RateDecision | None, Release]:
        """Count one request in the user's rate windows (RateLimitExceeded if one is full:
        then it is counted in none) and take a concurrency slot, and one of the API key's if
        it has a cap of its own (RateLimitExceeded if they are taken). Returns the tightest
        window's figures for the `X-RateLimit-*` headers (None if admitted blind, Redis down
        and PROXY_LIMITER_FAILURE_MODE=open) and the coroutine function that gives the slots
        back. In Redis, one round trip (`core/admission.py`).

        `request_id` only labels the slot (for diagnostics): the slot's name is unique even if
        two callers pass the same id, because a set member added twice is one slot.
        """
        items = self._rate_items(user)
        slot_sets = [(f"llm-proxy:slots:{user.sub}", self.concurrency_for(user), "per user")]
        if user.key is not None and user.key.concurrency_limit is not None:
            slot_sets.append((f"llm-proxy:key-slots:{user.key.id}",
                              user.key.concurrency_limit, "for this API key"))
        slot = f"{request_id}:{secrets.token_hex(8)}"
        if self._admission is None:
            return self._admit_locally(items, slot_sets, slot)
        windows = [Window(item.key_for(namespace, whose), item.amount, item.get_expiry())
                   for item, namespace, whose in items]
        asked = time.monotonic()
        try:
            outcome = await self._admission.admit(
                windows, [(key, cap) for key, cap, _ in slot_sets], slot)
        except Exception as exc:
            self.backend_failed(exc, "rate limit and concurrency")
            return None, _nothing
        if outcome.refused_window is not None:
            item, namespace, _ = items[outcome.refused_window]
            figures = outcome.windows[0]
            self._rate_refused(item, namespace, WindowStats(
                figures.oldest + item.get_expiry(), item.amount - figures.hits))
        if outcome.refused_slots is not None:
            _, cap, per = slot_sets[outcome.refused_slots]
            self._concurrency_refused(cap, outcome.wait, per)
        shared = self._slots
        assert shared is not None
        for key, _, _ in slot_sets:
            shared.track(key, slot, asked)

        async def release() -> None:
            # Each set's slot, the key's first; one that fails is retried by SharedSlots.
            for key, _, _ in reversed(slot_sets):
                await shared.release(key, slot)

        decision = None
        for (item, _, _), figures in zip(items, outcome.windows, strict=True):
            remaining = item.amount - figures.hits
            if decision is None or remaining < decision.remaining:
                decision = RateDecision(item.amount, remaining,
                                        figures.oldest + item.get_expiry())
        return decision, release

    def _admit_locally(self, items: list[tuple[RateLimitItem, str, str]],
                       slot_sets: list[tuple[str, int, str]], slot: str
                       ) -> tuple[RateDecision | None, Release]:
        """`admit` in process memory: the same checks, in the same order."""
        for item, namespace, whose in items:
            full = self._window.full(item, f"{namespace}/{whose}")
            if full is not None:
                self._rate_refused(item, namespace, full)
        decision = None
        for item, namespace, whose in items:
            stats = self._window.hit(item, f"{namespace}/{whose}")
            if decision is None or stats.remaining < decision.remaining:
                decision = RateDecision(item.amount, stats.remaining, stats.reset_time)
        for key, cap, per in slot_sets:
            if len(self._local_slots.get(key, ())) >= cap:
                self._concurrency_refused(cap, LOCAL_RETRY_SECONDS, per)
        held = [self._local_slots.setdefault(key, set()) for key, _, _ in slot_sets]
        for slots in held:
            slots.add(slot)

        async def release() -> None:
            for slots in held:
                slots.discard(slot)

        return decision, release

    def _rate_refused(self, item: RateLimitItem, namespace: str, stats: WindowStats) -> None:
        self._metrics.rate_limited.labels(limit="rate").inc()
        per = (f"{item.multiples} {item.GRANULARITY.name}s" if item.multiples > 1
               else item.GRANULARITY.name)
        of_key = " for this API key" if namespace == "key" else ""
        raise RateLimitExceeded(f"rate limit exceeded{of_key}: {item.amount} requests per {per}",
                                item.amount, stats.remaining, stats.reset_time)

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

    def _concurrency_refused(self, cap: int, retry_after: float, per: str) -> None:
        self._metrics.rate_limited.labels(limit="concurrency").inc()
        raise RateLimitExceeded(
            f"too many generations at once: at most {cap} {per}; wait for one to finish",
            cap, 0, time.time() + retry_after)

    async def ping(self) -> None:
        """Raise if the shared storage cannot be reached (no-op without Redis)."""
        if self._redis is not None:
            await self._redis.ping()


async def _nothing() -> None:
    """No slot to give back: admitted blind (Redis down, PROXY_LIMITER_FAILURE_MODE=open)."""
