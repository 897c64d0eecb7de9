"""Budgets and teams as requests meet them: which budgets a request is held to, admitting it
against them, charging its cost when it ends, rebuilding spend from the audit log, and the
gauges that show spend against budget. (The counters themselves: `core/spend.py`.)

The budgets, the teams' members and the API keys with limits of their own are read from the
database and kept in memory, reloaded every PROXY_BUDGET_REFRESH_SECONDS by a background task
(and at once on the replica that changes them), so admitting a request costs no database
round trip. A request's cost is the cost model's (`services/usage.py`), computed from the same
fields as its audit row, so the audit log can always say again what Redis holds.

**Rebuilt from the audit log.** When Redis has no mark that spend was rebuilt (a new Redis, a
FLUSHALL, a lost volume; or a process starting without Redis), the first request against a
budget rebuilds the current period of every budget from the audit log, under a lock so that one
replica does it, and adds it to whatever was charged meanwhile. Requests that finish during the
rebuild may be counted twice (charged to Redis and already in the audit log): an error that is
stricter, never looser.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime

from sqlalchemy import func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from proxy.audit.record import AuditRecord
from proxy.core.errors import ProxyError
from proxy.core.metrics import ProxyMetrics
from proxy.core.models import ApiKey, AuditEntry, BudgetRow, TeamMember
from proxy.core.ratelimit import Limiter
from proxy.core.security import Principal
from proxy.core.settings import Settings
from proxy.core.spend import Budget, Hold, RebuildNeeded, SpendLedger, period_bounds
from proxy.core.token_limits import DayTotals, TokenWindow
from proxy.services.usage import CostModel

log = logging.getLogger("proxy.budgets")

# A key at this share of a limit of its own counts as near it (llm_proxy_api_keys_near_limit).
NEAR_LIMIT = 0.9
# How long a replica that did not get the rebuild lock waits for the one that did.
REBUILD_WAIT_SECONDS = 10.0


@dataclass
class BudgetBook:
    """What the database says about budgets, as of `loaded_at`."""

    budgets: dict[tuple[str, str], list[Budget]] = field(default_factory=dict)
    teams: dict[str, str] = field(default_factory=dict)  # user -> team
    # Keys (not revoked) with token limits of their own: id -> (per minute, per day).
    limited_keys: dict[str, tuple[int | None, int | None]] = field(default_factory=dict)

    @classmethod
    async def load(cls, sessions: async_sessionmaker[AsyncSession]) -> BudgetBook:
        book = cls()
        async with sessions() as session:
            for row in (await session.execute(select(BudgetRow))).scalars():
                book.budgets.setdefault((row.scope, row.subject), []).append(Budget(
                    row.scope, row.subject, row.period, row.amount,  # type: ignore[arg-type]
                    row.soft_limit))
            for user, team in (await session.execute(
                    select(TeamMember.user, TeamMember.team))).all():
                book.teams[user] = team
            for key_id, per_minute, per_day in (await session.execute(
                    select(ApiKey.id, ApiKey.token_limit_per_minute, ApiKey.token_limit_per_day)
                    .where(ApiKey.revoked_at.is_(None))
                    .where(or_(ApiKey.token_limit_per_minute.is_not(None),
                               ApiKey.token_limit_per_day.is_not(None))))).all():
                book.limited_keys[key_id] = (per_minute, per_day)
        return book

    def of(self, user: Principal) -> tuple[str | None, list[Budget]]:
        """The caller's team, and every budget their request counts against."""
        team = self.teams.get(user.sub)
        subjects = [("user", user.sub)]
        if user.key is not None:
            subjects.append(("key", user.key.id))
        if team is not None:
            subjects.append(("team", team))
        return team, [b for subject in subjects for b in self.budgets.get(subject, [])]


@dataclass
class BudgetStatus:
    budget: Budget
    spent: float
    resets_at: datetime


async def day_token_totals(sessions: async_sessionmaker[AsyncSession], now: float
                           ) -> DayTotals:
    """The tokens (prompt and generated) of today's (UTC) generations in the audit log, per user
    and per API key: what the day token windows hold (`core/token_limits.py` rebuilds them from
    this after a Redis loss). Cached answers generated nothing and are left out."""
    day = datetime.fromtimestamp(now - now % 86_400, UTC)
    tokens = func.sum(AuditEntry.prompt_tokens + AuditEntry.completion_tokens)
    recent = (AuditEntry.at >= day, AuditEntry.cached.is_(False))
    totals: DayTotals = {}
    async with sessions() as session:
        for user, total in (await session.execute(
                select(AuditEntry.user, tokens).where(*recent, AuditEntry.user.is_not(None))
                .group_by(AuditEntry.user))).all():
            totals[("user", str(user))] = int(total or 0)
        for key_id, total in (await session.execute(
                select(AuditEntry.api_key_id, tokens)
                .where(*recent, AuditEntry.api_key_id.is_not(None))
                .group_by(AuditEntry.api_key_id))).all():
            totals[("key", str(key_id))] = int(total or 0)
    return totals


class Budgets:
    def __init__(self, settings: Settings, sessions: async_sessionmaker[AsyncSession],
                 limiter: Limiter, metrics: ProxyMetrics) -> None:
        self._settings = settings
        self._sessions = sessions
        self._limiter = limiter
        self._ledger: SpendLedger = limiter.spend
        self._metrics = metrics
        self._costs = CostModel(settings)
        self.book = BudgetBook()
        self._failing = False

    async def admit(self, user: Principal, record: AuditRecord) -> None:
        """Hold the caller's budgets for this request (QuotaExceeded when one is spent,
        BudgetBusy near the end); its cost is charged when it is over (`finish`)."""
        team, budgets = self.book.of(user)
        record.team = team
        if not budgets:
            return
        try:
            hold = await self._hold(budgets, record.id)
        except ProxyError:
            self._metrics.rate_limited.labels(limit="budget").inc()
            raise
        except Exception as exc:
            self._limiter.backend_failed(exc, "budget")
            return
        if hold is None:
            return

        async def charge() -> None:
            await self._charge(hold, record)

        record.on_finish.append(charge)

    async def _hold(self, budgets: list[Budget], request_id: str) -> Hold | None:
        try:
            return await self._ledger.admit(budgets, request_id)
        except RebuildNeeded:
            await self.rebuild()
        try:
            return await self._ledger.admit(budgets, request_id)
        except RebuildNeeded:
            log.warning("spend is being rebuilt by another replica and is not ready yet; "
                        "admitting without holding budgets")
            return None

    async def _charge(self, hold: Hold, record: AuditRecord) -> None:
        cost = self._costs.cost(record)
        try:
            totals = await self._ledger.charge(hold, cost)
        except Exception as exc:
            log.warning("could not charge %.6f to budgets in Redis (%s: %s); the audit log "
                        "has it", cost, type(exc).__name__, exc)
            await self._ledger.release(hold)
            return
        for budget, total in zip(hold.budgets, totals, strict=True):
            soft = budget.soft_limit
            if soft is not None and total - cost < soft <= total:
                self._metrics.budget_soft_limit_crossed.labels(scope=budget.scope).inc()
                log.warning("%s went past its soft limit: %.6g of %.6g spent",
                            budget.describe(), total, budget.amount)

    async def rebuild(self) -> None:
        """Rebuild the current period's spend of every budget from the audit log (one replica
        does it; the others wait for it)."""
        if not await self._ledger.try_lock_rebuild():
            waited = 0.0
            while waited < REBUILD_WAIT_SECONDS and not await self._ledger.rebuilt():
                await asyncio.sleep(0.1)
                waited += 0.1
            return
        now = datetime.now(UTC)
        budgets = [b for listed in self.book.budgets.values() for b in listed]
        spend: dict[Budget, float] = defaultdict(float)
        largest: dict[Budget, float] = {}
        if budgets:
            since = min(period_bounds(b.period, now)[0] for b in budgets)
            async with self._sessions() as session:
                entries = list(await session.scalars(
                    select(AuditEntry).where(AuditEntry.at >= since)))
            for entry in entries:
                cost = self._costs.cost(entry)
                if cost <= 0:
                    continue
                for budget in budgets:
                    if entry.at >= period_bounds(budget.period, now)[0] and _charged_to(
                            budget, entry):
                        spend[budget] += cost
                        largest[budget] = max(cost, largest.get(budget, 0.0))
        await self._ledger.restore(dict(spend), largest, now)
        log.info("spend of %d budgets rebuilt from the audit log", len(budgets))

    async def statuses(self, budgets: list[Budget] | None = None) -> list[BudgetStatus]:
        """Every budget (or those given) with what it has spent in its current period."""
        now = datetime.now(UTC)
        if budgets is None:
            budgets = [b for listed in self.book.budgets.values() for b in listed]
        spent = await self._ledger.spent(budgets, now)
        return [BudgetStatus(b, s, period_bounds(b.period, now)[1])
                for b, s in zip(budgets, spent, strict=True)]

    async def refresh(self) -> None:
        """Reload the book from the database, and the gauges from Redis."""
        self.book = await BudgetBook.load(self._sessions)
        await self._update_gauges()

    async def _update_gauges(self) -> None:
        m = self._metrics
        statuses = await self.statuses()
        for gauge in (m.team_budget_spend, m.team_budget_limit, m.team_budget_soft_limit):
            gauge.clear()
        near: dict[str, set[str]] = {"tokens_per_minute": set(), "tokens_per_day": set(),
                                     "budget": set()}
        for status in statuses:
            budget = status.budget
            if budget.scope == "team":
                labels = {"team": budget.subject, "period": budget.period}
                m.team_budget_spend.labels(**labels).set(status.spent)
                m.team_budget_limit.labels(**labels).set(budget.amount)
                if budget.soft_limit is not None:
                    m.team_budget_soft_limit.labels(**labels).set(budget.soft_limit)
            elif budget.scope == "key" and status.spent >= NEAR_LIMIT * budget.amount:
                near["budget"].add(budget.subject)
        now = datetime.now(UTC).timestamp()
        windows = [TokenWindow("key", key_id, span, limit)  # type: ignore[arg-type]
                   for key_id, limits in self.book.limited_keys.items()
                   for span, limit in zip(("minute", "day"), limits, strict=True) if limit]
        if windows:
            totals = await self._limiter.tokens.totals(windows, now)
            for window, total in zip(windows, totals, strict=True):
                if total >= NEAR_LIMIT * window.limit:
                    near[f"tokens_per_{window.span}"].add(window.who)
        for limit, keys in near.items():
            m.keys_near_limit.labels(limit=limit).set(len(keys))

    async def keep_fresh(self) -> None:
        """Refresh forever (the app's lifespan runs it as a task); while the database or
        Redis cannot be read, the last book loaded stays in force."""
        while True:
            try:
                await self.refresh()
                if self._failing:
                    log.info("budgets are read again")
                self._failing = False
            except Exception as exc:
                if not self._failing:
                    log.warning("budgets cannot be refreshed (%s); the last ones loaded stay "
                                "in force", type(exc).__name__)
                self._failing = True
            await asyncio.sleep(self._settings.proxy_budget_refresh_seconds)


def _charged_to(budget: Budget, entry: AuditEntry) -> bool:
    if budget.scope == "user":
        return entry.user == budget.subject
    if budget.scope == "key":
        return entry.api_key_id == budget.subject
    return entry.team == budget.subject
