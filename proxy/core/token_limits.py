"""Token limits: tokens (prompt and generated) per minute and per day, per user and per API key.

Each limit is counted in fixed windows aligned on UTC (a minute, a day), so that a refusal can
say exactly when the window resets. With `REDIS_URL` a window is one Redis counter that every
replica adds to (one Lua script adds to all of a request's windows at once and returns their
totals: no update is lost between replicas); without it, a counter in the process's memory.

- **Before a request runs** its windows are read: one that is spent refuses it with 429 and
  `Retry-After` (the window's reset).
- **While it runs** its chunks are counted as they flow, a chunk as one token, added every
  `PROXY_TOKEN_COUNT_EVERY` chunks (a round trip to Redis per that many chunks, not per chunk).
  When an addition takes a window past its limit, the chunk that made it is not sent and the
  stream ends with the dialect's error (`QuotaExceeded`). When the engine's final counts come
  (prompt and generated tokens), what they say beyond the chunks already counted is added.
- **Overshoot.** Every addition that is let through leaves the window at or under its limit, so
  the chunks they covered fit in it; past it, a stream can only have sent the chunks it had not
  counted yet: at most `PROXY_TOKEN_COUNT_EVERY - 1` per concurrent stream. The prompt is
  counted when the engine reports it, at the end of a generation, so a request's prompt tokens
  can go past a limit too (one prompt per request running when it is reached); a stream that is
  stopped or abandoned is charged the chunks it sent, and no prompt (the engine never says).
- A Redis failure while a stream runs is logged and counted, and the stream goes on: a hiccup
  must not cut answers off. The check before a request follows PROXY_LIMITER_FAILURE_MODE.
- **After a Redis loss** (or, without Redis, a process start) the day windows are rebuilt from
  the audit log, the source of truth: the tokens of today's rows per user and per API key are
  put back before the next check, by one replica (a marker key says it is done; its absence is
  checked at most once a second, so a loss is noticed within a second). Rows still on their way
  to the database then are missing, and requests that ended after the loss but before the
  rebuild are counted twice (the stricter error). A minute window is not rebuilt: it is over
  within a minute anyway.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Literal

from redis.asyncio import Redis

from proxy.core.errors import QuotaExceeded
from proxy.core.security import Principal
from proxy.core.settings import Settings

log = logging.getLogger("proxy.limits")

# Present while the day windows hold what the audit log says: gone (a new or flushed Redis)
# means they must be rebuilt.
REBUILT_KEY = "llm-proxy:tokens:rebuilt"
REBUILDING_KEY = "llm-proxy:tokens:rebuilding"
# How often the marker is looked for: a Redis round trip a second, not one per request.
REBUILT_CHECK_SECONDS = 1.0
# The day's tokens of each user and key, from the audit log: {("user"|"key", who): tokens}.
DayTotals = dict[tuple[str, str], int]

Span = Literal["minute", "day"]
SPAN_SECONDS: dict[Span, int] = {"minute": 60, "day": 86_400}

# KEYS: the windows' counters; ARGV[1]: tokens to add, ARGV[1 + i]: window i's TTL -> totals.
ADD_SCRIPT = """
local totals = {}
for i, key in ipairs(KEYS) do
  totals[i] = redis.call('INCRBY', key, ARGV[1])
  redis.call('EXPIRE', key, ARGV[i + 1])
end
return totals
"""


@dataclass(frozen=True)
class TokenWindow:
    """One token limit a request counts in: `whose` ("user" or "key") `who`, per `span`."""

    whose: Literal["user", "key"]
    who: str
    span: Span
    limit: int

    @property
    def seconds(self) -> int:
        return SPAN_SECONDS[self.span]

    def key(self, now: float) -> str:
        return f"llm-proxy:tokens:{self.whose}:{self.who}:{self.span}:{int(now // self.seconds)}"

    def resets_at(self, now: float) -> float:
        return (math.floor(now / self.seconds) + 1) * self.seconds

    def spent(self, now: float) -> QuotaExceeded:
        of_key = " for this API key" if self.whose == "key" else ""
        return QuotaExceeded(f"token limit reached{of_key}: {self.limit} tokens per {self.span}",
                             self.resets_at(now), "token_limit_exceeded")


def token_windows(settings: Settings, user: Principal) -> list[TokenWindow]:
    """The token limits `user` is held to: their own (a user override, else the role's, else
    the global value, field by field) and their API key's, if it has any."""
    by_user = settings.proxy_token_limit_users.get(user.sub)
    by_role = settings.proxy_token_limit_roles.get(user.role)
    windows: list[TokenWindow] = []
    for span, default in (("minute", settings.proxy_token_limit_per_minute),
                          ("day", settings.proxy_token_limit_per_day)):
        field = f"per_{span}"
        limit = next((value for value in (getattr(by_user, field, None),
                                          getattr(by_role, field, None)) if value is not None),
                     default)
        if limit:
            windows.append(TokenWindow("user", user.sub, span, limit))  # type: ignore[arg-type]
    if user.key is not None:
        for span, limit in (("minute", user.key.token_limit_per_minute),
                            ("day", user.key.token_limit_per_day)):
            if limit:
                windows.append(TokenWindow("key", user.key.id, span, limit))  # type: ignore[arg-type]
    return windows


class TokenCounter:
    """The windows' counters: in Redis (shared by replicas) or in this process's memory."""

    def __init__(self, redis: Redis | None) -> None:
        self._redis = redis
        self._add = redis.register_script(ADD_SCRIPT) if redis is not None else None
        # key -> (total, when the window is over: epoch seconds)
        self._local: dict[str, tuple[int, float]] = {}
        # Reads today's totals from the audit log (services/budgets.py sets it); None: the day
        # windows are never rebuilt.
        self.day_totals: Callable[[float], Awaitable[DayTotals]] | None = None
        self._rebuilt_seen = float("-inf")  # when the marker was last seen (monotonic)

    async def ensure_rebuilt(self, now: float) -> None:
        """Put the day windows back from the audit log if they were lost (see the module's
        docstring); one replica does it, the others go on meanwhile."""
        if self.day_totals is None or time.monotonic() - self._rebuilt_seen < REBUILT_CHECK_SECONDS:
            return
        if self._redis is None:
            if self._rebuilt_seen == float("-inf"):
                totals = await self._read_day_totals(now)
                if totals is None:
                    return
                self._restore_locally(totals, now)
            self._rebuilt_seen = time.monotonic()
            return
        if await self._redis.exists(REBUILT_KEY):
            self._rebuilt_seen = time.monotonic()
            return
        if not await self._redis.set(REBUILDING_KEY, "1", nx=True, ex=60):
            return  # another replica is at it (or failed within the minute: retried after it)
        totals = await self._read_day_totals(now)
        if totals is None:
            return
        async with self._redis.pipeline(transaction=True) as pipe:
            for (whose, who), tokens in totals.items():
                window = TokenWindow(whose, who, "day", 0)  # type: ignore[arg-type]
                if tokens > 0:
                    pipe.incrby(window.key(now), tokens)
                    pipe.expire(window.key(now), window.seconds + 60)
            pipe.set(REBUILT_KEY, "1")
            pipe.delete(REBUILDING_KEY)
            await pipe.execute()
        self._rebuilt_seen = time.monotonic()
        log.info("the day token windows of %d users and keys were rebuilt from the audit log",
                 len(totals))

    async def _read_day_totals(self, now: float) -> DayTotals | None:
        """Today's totals from the audit log; None (logged) while it cannot be read: requests
        are not refused for it, the windows go on from what they hold."""
        assert self.day_totals is not None
        try:
            return await self.day_totals(now)
        except Exception as exc:
            log.warning("the day token windows cannot be rebuilt from the audit log yet "
                        "(%s: %s)", type(exc).__name__, exc)
            return None

    def _restore_locally(self, totals: DayTotals, now: float) -> None:
        for (whose, who), tokens in totals.items():
            window = TokenWindow(whose, who, "day", 0)  # type: ignore[arg-type]
            key = window.key(now)
            self._local[key] = (self._local.get(key, (0, 0.0))[0] + tokens,
                                window.resets_at(now))

    async def totals(self, windows: list[TokenWindow], now: float) -> list[int]:
        keys = [w.key(now) for w in windows]
        if self._redis is None:
            return [self._local.get(key, (0, 0.0))[0] for key in keys]
        values = await self._redis.mget(keys)
        return [int(v) if v is not None else 0 for v in values]

    async def add(self, windows: list[TokenWindow], tokens: int, now: float) -> list[int]:
        keys = [w.key(now) for w in windows]
        if self._add is None:
            self._forget_past(now)
            totals = []
            for key, window in zip(keys, windows, strict=True):
                total = self._local.get(key, (0, 0.0))[0] + tokens
                self._local[key] = (total, window.resets_at(now))
                totals.append(total)
            return totals
        # A window's counter outlives the window by a minute, for clocks a little apart.
        ttls = [w.seconds + 60 for w in windows]
        return [int(t) for t in await self._add(keys=keys, args=[tokens, *ttls])]

    def _forget_past(self, now: float) -> None:
        if len(self._local) > 1000:
            self._local = {k: v for k, v in self._local.items() if v[1] > now}


class TokenMeter:
    """Counts one generation's tokens into its windows as they flow (see the module's
    docstring): `chunk` for each chunk sent, `settle` with the engine's final count, `close`
    when the request is over."""

    def __init__(self, counter: TokenCounter, windows: list[TokenWindow], every: int,
                 backend_failed: Callable[[Exception], None]) -> None:
        self._counter = counter
        self._windows = windows
        self._every = every
        self._backend_failed = backend_failed
        self.counted = 0  # tokens added to the windows so far
        self._pending = 0  # chunks sent or about to be, not added yet
        self._settled = False

    async def chunk(self) -> None:
        """Count one chunk that is about to be sent; raise QuotaExceeded, before it is sent,
        if counting it took a window past its limit."""
        if not self._windows:
            return
        self._pending += 1
        if self._pending < self._every:
            return
        pending, self._pending = self._pending, 0
        now = time.time()
        totals = await self._add(pending, now)
        self.counted += pending
        for window, total in zip(self._windows, totals or (), strict=False):
            if total > window.limit:
                raise window.spent(now)

    async def settle(self, tokens: int) -> None:
        """The generation ended and the engine counted `tokens` (prompt and generated)."""
        self._settled = True
        extra, self._pending = tokens - self.counted, 0
        if self._windows and extra > 0:
            await self._add(extra, time.time())
            self.counted += extra

    async def close(self) -> None:
        """The request is over: chunks sent but not counted yet are (a stream stopped or left
        before the engine's final count)."""
        if not self._settled and self._windows and self._pending > 0:
            pending, self._pending = self._pending, 0
            await self._add(pending, time.time())
            self.counted += pending

    async def _add(self, tokens: int, now: float) -> list[int] | None:
        try:
            return await self._counter.add(self._windows, tokens, now)
        except Exception as exc:
            self._backend_failed(exc)
            return None
