"""Budgets: what a user, an API key or a team may spend per day, week or month, in the cost
model's money (`services/usage.py`: GPU time or tokens), and what they have spent.

Periods are calendar periods in UTC: a day, a week from Monday, a month from its first day; a
budget resets when its period does. Spend lives in Redis (shared by every replica; in the
process's memory without `REDIS_URL`), one float per budget and period, and the audit log is
its source of truth: after a Redis loss it is rebuilt from there (`services/budgets.py`).

**Admission and charge, atomic across replicas.** A request is admitted by one Lua script that
checks all of its budgets at once and takes a *hold* on each (a lease in a sorted set, the same
shape as a concurrency slot, renewed while the request runs: `core/slots.py`); its cost is
known when it ends, and a second script adds it (INCRBYFLOAT) and gives the holds back. A spent
budget refuses (429, with its reset). So that requests running side by side cannot together
overrun a budget, the script admits a request beside others only while the budget has room for
all of them and it, each counted at the largest cost one request has had against that budget;
near the end, requests go one at a time (429 `budget_busy`, retry in a second). A budget is
therefore exceeded by at most one request's cost — unless requests bigger than any before them
run side by side (the first requests against a new budget go one at a time for that reason).
"""

from __future__ import annotations

import math
import secrets
import time
from calendar import monthrange
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal

from redis.asyncio import Redis

from proxy.core.errors import ProxyError, QuotaExceeded
from proxy.core.slots import SharedSlots

Scope = Literal["user", "key", "team"]
Period = Literal["day", "week", "month"]
SCOPES: tuple[Scope, ...] = ("user", "key", "team")
PERIODS: tuple[Period, ...] = ("day", "week", "month")
# Where spend is known to be rebuilt from the audit log: gone (a new or flushed Redis) means
# rebuild before admitting anything against a budget.
REBUILT_KEY = "llm-proxy:spend:rebuilt"
# The largest cost of one request against a budget's subject, kept past a period's end so
# that a new period does not start by letting requests run side by side blind.
LARGEST_TTL_SECONDS = 40 * 86_400

# KEYS: REBUILT_KEY, then per budget: spend, holds, largest. ARGV: the hold's lease, its name,
# then per budget its amount. -> {-1} rebuild first; {0, i} budget i spent; {1, i} budget i
# busy; {2} admitted, holds taken.
ADMIT_SCRIPT = """
if redis.call('EXISTS', KEYS[1]) == 0 then
  return {-1}
end
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local lease = tonumber(ARGV[1])
local n = (#KEYS - 1) / 3
for i = 1, n do
  local holds = KEYS[3 * i]
  redis.call('ZREMRANGEBYSCORE', holds, '-inf', now)
  local amount = tonumber(ARGV[2 + i])
  local spent = tonumber(redis.call('GET', KEYS[3 * i - 1]) or '0')
  if spent >= amount then
    return {0, i}
  end
  local running = redis.call('ZCARD', holds)
  local largest = tonumber(redis.call('GET', KEYS[3 * i + 1]) or '-1')
  if running > 0 and (largest < 0 or spent + (running + 1) * largest > amount) then
    return {1, i}
  end
end
for i = 1, n do
  redis.call('ZADD', KEYS[3 * i], now + lease, ARGV[2])
  redis.call('PEXPIRE', KEYS[3 * i], math.ceil(lease * 1000) + 60000)
end
return {2}
"""

# KEYS: per budget: spend, holds, largest. ARGV: the cost, the hold's name, then per budget the
# spend key's TTL. -> the spend of each budget after, as strings (Lua would truncate floats).
CHARGE_SCRIPT = """
local cost = tonumber(ARGV[1])
local out = {}
for i = 1, #KEYS / 3 do
  local spend = KEYS[3 * i - 2]
  local total
  if cost > 0 then
    total = redis.call('INCRBYFLOAT', spend, ARGV[1])
    redis.call('EXPIRE', spend, ARGV[2 + i])
    local largest = tonumber(redis.call('GET', KEYS[3 * i]) or '-1')
    if cost > largest then
      redis.call('SET', KEYS[3 * i], ARGV[1], 'EX', LARGEST_TTL)
    end
  else
    total = redis.call('GET', spend) or '0'
  end
  redis.call('ZREM', KEYS[3 * i - 1], ARGV[2])
  out[i] = tostring(total)
end
return out
""".replace("LARGEST_TTL", str(LARGEST_TTL_SECONDS))


def period_bounds(period: Period, at: datetime) -> tuple[datetime, datetime]:
    """The UTC calendar period holding `at`: [start, end)."""
    day = at.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    if period == "day":
        return day, day + timedelta(days=1)
    if period == "week":
        start = day - timedelta(days=day.weekday())
        return start, start + timedelta(days=7)
    start = day.replace(day=1)
    return start, start + timedelta(days=monthrange(start.year, start.month)[1])


@dataclass(frozen=True)
class Budget:
    """`amount` a `scope` (`subject`: a user id, a key id, a team name) may spend per `period`;
    past `soft_limit`, if set, the proxy warns (a metric, an alert) but still admits."""

    scope: Scope
    subject: str
    period: Period
    amount: float
    soft_limit: float | None = None

    def spend_key(self, at: datetime) -> str:
        start = period_bounds(self.period, at)[0].date().isoformat()
        return f"llm-proxy:spend:{self.scope}:{self.subject}:{self.period}:{start}"

    @property
    def holds_key(self) -> str:
        return f"llm-proxy:spend-holds:{self.scope}:{self.subject}"

    @property
    def largest_key(self) -> str:
        return f"llm-proxy:spend-largest:{self.scope}:{self.subject}"

    def describe(self) -> str:
        whose = {"user": "user", "key": "API key", "team": "team"}[self.scope]
        return f"the {self.period}ly budget of {whose} '{self.subject}'" \
            if self.period != "day" else f"the daily budget of {whose} '{self.subject}'"

    def spent(self, at: datetime) -> QuotaExceeded:
        return QuotaExceeded(f"{self.describe()} ({self.amount:g}) is spent",
                             period_bounds(self.period, at)[1].timestamp(), "budget_exceeded")

    def ttl(self, at: datetime) -> int:
        # The spend outlives its period by a day, for clocks a little apart and late charges.
        return math.ceil(period_bounds(self.period, at)[1].timestamp() - at.timestamp()) + 86_400


class BudgetBusy(ProxyError):
    """A budget is nearly spent and one request against it is running: requests go one at a
    time now, so that together they cannot overrun it."""

    status_code = 429
    code = "budget_busy"

    def headers(self) -> dict[str, str]:
        return {"Retry-After": "1"}


class RebuildNeeded(Exception):
    """Redis has no record of spend being rebuilt (new or flushed): rebuild, then admit."""


@dataclass
class Hold:
    """A request's holds on its budgets, given back by `SpendLedger.charge`."""

    budgets: list[Budget]
    name: str
    at: datetime


class SpendLedger:
    """Budgets' spend and holds: in Redis (shared by replicas) or in this process's memory."""

    def __init__(self, redis: Redis | None, slots: SharedSlots | None, lease: float) -> None:
        self._redis = redis
        self._slots = slots
        self._lease = lease
        if redis is not None:
            self._admit = redis.register_script(ADMIT_SCRIPT)
            self._charge = redis.register_script(CHARGE_SCRIPT)
        # In memory: spend key -> spend; holds key -> names; largest key -> cost.
        self._spend: dict[str, float] = {}
        self._holds: dict[str, set[str]] = {}
        self._largest: dict[str, float] = {}
        self._rebuilt = False

    async def admit(self, budgets: list[Budget], request_id: str) -> Hold:
        """Hold every budget of a request, or raise QuotaExceeded (one is spent), BudgetBusy
        or RebuildNeeded."""
        at = datetime.now(UTC)
        name = f"{request_id}:{secrets.token_hex(8)}"
        if self._redis is None:
            self._admit_locally(budgets, name, at)
            return Hold(budgets, name, at)
        keys = [REBUILT_KEY]
        for budget in budgets:
            keys += [budget.spend_key(at), budget.holds_key, budget.largest_key]
        asked = time.monotonic()
        answer = await self._admit(keys=keys, args=[self._lease, name,
                                                    *(b.amount for b in budgets)])
        self._refuse(budgets, [int(x) for x in answer], at)
        if self._slots is not None:
            for budget in budgets:
                self._slots.track(budget.holds_key, name, asked)
        return Hold(budgets, name, at)

    def _admit_locally(self, budgets: list[Budget], name: str, at: datetime) -> None:
        if not self._rebuilt:
            raise RebuildNeeded
        for i, budget in enumerate(budgets, start=1):
            spent = self._spend.get(budget.spend_key(at), 0.0)
            running = len(self._holds.get(budget.holds_key, ()))
            largest = self._largest.get(budget.largest_key, -1.0)
            if spent >= budget.amount:
                self._refuse(budgets, [0, i], at)
            if running and (largest < 0 or spent + (running + 1) * largest > budget.amount):
                self._refuse(budgets, [1, i], at)
        for budget in budgets:
            self._holds.setdefault(budget.holds_key, set()).add(name)

    @staticmethod
    def _refuse(budgets: list[Budget], answer: list[int], at: datetime) -> None:
        if answer[0] == -1:
            raise RebuildNeeded
        if answer[0] == 0:
            raise budgets[answer[1] - 1].spent(at)
        if answer[0] == 1:
            raise BudgetBusy(f"{budgets[answer[1] - 1].describe()} is nearly spent: requests "
                             "against it run one at a time now; retry in a moment")

    async def charge(self, hold: Hold, cost: float) -> list[float]:
        """Add the request's cost to the budgets it held, in the period it was admitted in,
        and give the holds back; the budgets' spend after."""
        at = hold.at
        if self._redis is None:
            totals = []
            for budget in hold.budgets:
                key = budget.spend_key(at)
                if cost > 0:
                    self._spend[key] = self._spend.get(key, 0.0) + cost
                    largest = self._largest.get(budget.largest_key, -1.0)
                    self._largest[budget.largest_key] = max(largest, cost)
                self._holds.get(budget.holds_key, set()).discard(hold.name)
                totals.append(self._spend.get(key, 0.0))
            return totals
        keys: list[str] = []
        for budget in hold.budgets:
            keys += [budget.spend_key(at), budget.holds_key, budget.largest_key]
        if self._slots is not None:
            for budget in hold.budgets:
                self._slots.untrack(budget.holds_key, hold.name)
        answer = await self._charge(keys=keys, args=[repr(float(cost)), hold.name,
                                                     *(b.ttl(at) for b in hold.budgets)])
        return [float(total) for total in answer]

    async def release(self, hold: Hold) -> None:
        """Give the holds back without a charge (after a failed charge: retried until it
        gets through or the leases lapse)."""
        if self._slots is not None:
            for budget in hold.budgets:
                await self._slots.release(budget.holds_key, hold.name)

    async def spent(self, budgets: list[Budget], at: datetime) -> list[float]:
        """What each budget has spent in the period holding `at`."""
        keys = [b.spend_key(at) for b in budgets]
        if self._redis is None:
            return [self._spend.get(key, 0.0) for key in keys]
        if not keys:
            return []
        return [float(v) if v is not None else 0.0 for v in await self._redis.mget(keys)]

    async def try_lock_rebuild(self) -> bool:
        """Whether this process may rebuild (one replica at a time does)."""
        if self._redis is None:
            return True
        return bool(await self._redis.set("llm-proxy:spend:rebuilding", "1", nx=True, ex=60))

    async def rebuilt(self) -> bool:
        if self._redis is None:
            return self._rebuilt
        return bool(await self._redis.exists(REBUILT_KEY))

    async def restore(self, spend: dict[Budget, float], largest: dict[Budget, float],
                      at: datetime) -> None:
        """Put spend rebuilt from the audit log back, on top of what was charged since the
        loss, and mark spend as rebuilt."""
        if self._redis is None:
            for budget, amount in spend.items():
                key = budget.spend_key(at)
                self._spend[key] = self._spend.get(key, 0.0) + amount
            for budget, cost in largest.items():
                self._largest[budget.largest_key] = max(
                    cost, self._largest.get(budget.largest_key, -1.0))
            self._rebuilt = True
            return
        async with self._redis.pipeline(transaction=True) as pipe:
            for budget, amount in spend.items():
                if amount > 0:
                    pipe.incrbyfloat(budget.spend_key(at), amount)
                    pipe.expire(budget.spend_key(at), budget.ttl(at))
            for budget, cost in largest.items():
                pipe.set(budget.largest_key, repr(cost), ex=LARGEST_TTL_SECONDS)
            pipe.set(REBUILT_KEY, datetime.now(UTC).isoformat())
            pipe.delete("llm-proxy:spend:rebuilding")
            await pipe.execute()
