"""Managing teams, their members and budgets (the admin API). Every change is written to the
database, then put in force on this replica at once; the others see it within
PROXY_BUDGET_REFRESH_SECONDS (`services/budgets.py`)."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError

from proxy.core.errors import Conflict, NotFound
from proxy.core.models import ApiKey, BudgetRow, Team, TeamMember
from proxy.core.security import Principal
from proxy.schemas import BudgetIn, BudgetList, BudgetOut, TeamIn, TeamOut
from proxy.services.state import AppState


async def list_teams(state: AppState) -> list[TeamOut]:
    async with state.sessions() as session:
        teams = list((await session.execute(select(Team).order_by(Team.name))).scalars())
        members = (await session.execute(
            select(TeamMember.team, TeamMember.user).order_by(TeamMember.user))).all()
    by_team: dict[str, list[str]] = {}
    for team, user in members:
        by_team.setdefault(team, []).append(user)
    return [TeamOut(name=t.name, description=t.description, created_by=t.created_by,
                    created_at=t.created_at, members=by_team.get(t.name, [])) for t in teams]


async def _team(state: AppState, name: str) -> TeamOut:
    for team in await list_teams(state):
        if team.name == name:
            return team
    raise NotFound(f"team '{name}' not found")


async def create_team(state: AppState, body: TeamIn, created_by: str) -> TeamOut:
    try:
        async with state.sessions() as session, session.begin():
            session.add(Team(name=body.name, description=body.description,
                             created_by=created_by, created_at=datetime.now(UTC)))
    except IntegrityError as exc:
        raise Conflict(f"team '{body.name}' already exists") from exc
    return await _team(state, body.name)


async def delete_team(state: AppState, name: str) -> TeamOut:
    """Delete a team, its members' membership and its budgets (its audit rows keep its name)."""
    team = await _team(state, name)
    async with state.sessions() as session, session.begin():
        await session.execute(delete(TeamMember).where(TeamMember.team == name))
        await session.execute(delete(BudgetRow).where(BudgetRow.scope == "team",
                                                      BudgetRow.subject == name))
        await session.execute(delete(Team).where(Team.name == name))
    await state.budgets.refresh()
    return team


async def add_member(state: AppState, name: str, user: str, added_by: str) -> TeamOut:
    """Put `user` in the team; adding a member again changes nothing. A user in another team
    is refused (409): a request is charged to one team."""
    async with state.sessions() as session, session.begin():
        if await session.get(Team, name) is None:
            raise NotFound(f"team '{name}' not found")
        current = await session.get(TeamMember, user, with_for_update=True)
        if current is not None and current.team != name:
            raise Conflict(f"user '{user}' is in team '{current.team}'; remove them there "
                           "first (a user is in one team at most)")
        if current is None:
            session.add(TeamMember(user=user, team=name, added_by=added_by,
                                   added_at=datetime.now(UTC)))
    await state.budgets.refresh()
    return await _team(state, name)


async def remove_member(state: AppState, name: str, user: str) -> TeamOut:
    async with state.sessions() as session, session.begin():
        removed = await session.execute(delete(TeamMember).where(
            TeamMember.team == name, TeamMember.user == user))
    if not removed.rowcount:  # type: ignore[attr-defined]
        raise NotFound(f"user '{user}' is not in team '{name}'")
    await state.budgets.refresh()
    return await _team(state, name)


async def budget_list(state: AppState, user: Principal | None = None) -> BudgetList:
    """Every budget with its current period's spend, teams first; with `user`, only those the
    user's requests count against (their own, their team's, and the key's they called with)."""
    order = {"team": 0, "user": 1, "key": 2}
    mine = None if user is None else state.budgets.book.of(user)[1]
    statuses = sorted(await state.budgets.statuses(mine), key=lambda s: (
        order[s.budget.scope], s.budget.subject, s.budget.period))
    return BudgetList(
        currency=state.settings.proxy_cost_currency, cost_mode=state.settings.proxy_cost_mode,
        budgets=[BudgetOut(scope=s.budget.scope, subject=s.budget.subject,
                           period=s.budget.period, amount=s.budget.amount,
                           soft_limit=s.budget.soft_limit, spent=round(s.spent, 6),
                           resets_at=s.resets_at) for s in statuses])


def _one(budgets: BudgetList, scope: str, subject: str, period: str) -> BudgetOut:
    return next(b for b in budgets.budgets
                if (b.scope, b.subject, b.period) == (scope, subject, period))


async def set_budget(state: AppState, scope: str, subject: str, period: str, body: BudgetIn,
                     updated_by: str) -> BudgetOut:
    """Create or change a budget; what was spent in the current period stays spent."""
    async with state.sessions() as session, session.begin():
        if scope == "team" and await session.get(Team, subject) is None:
            raise NotFound(f"team '{subject}' not found")
        if scope == "key" and await session.get(ApiKey, subject) is None:
            raise NotFound(f"API key '{subject}' not found")
        row = (await session.execute(select(BudgetRow).where(
            BudgetRow.scope == scope, BudgetRow.subject == subject, BudgetRow.period == period)
            .with_for_update())).scalar_one_or_none()
        if row is None:
            row = BudgetRow(scope=scope, subject=subject, period=period)
            session.add(row)
        row.amount, row.soft_limit = body.amount, body.soft_limit
        row.updated_by, row.updated_at = updated_by, datetime.now(UTC)
    await state.budgets.refresh()
    return _one(await budget_list(state), scope, subject, period)


async def delete_budget(state: AppState, scope: str, subject: str, period: str) -> None:
    """Remove a budget (what was spent stays in the audit log)."""
    async with state.sessions() as session, session.begin():
        removed = await session.execute(delete(BudgetRow).where(
            BudgetRow.scope == scope, BudgetRow.subject == subject, BudgetRow.period == period))
    if not removed.rowcount:  # type: ignore[attr-defined]
        raise NotFound(f"no {period} budget for {scope} '{subject}'")
    await state.budgets.refresh()
