"""Teams and budgets, for admins: `/api/admin/teams` (create, delete, add and remove members)
and `/api/admin/budgets` (set, list with what each has spent, remove); for every caller,
`/api/llm/budgets` (the budgets their own requests count against). Budgets are in the cost
model's money; how they are enforced is in `core/spend.py`."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Path, Response

from proxy.api.deps import AdminUser, CurrentUser, StateDep
from proxy.api.routes.admin import ADMIN_ERRORS
from proxy.api.routes.llm import ERRORS
from proxy.schemas import (
    TEAM_NAME_PATTERN,
    BudgetIn,
    BudgetList,
    BudgetOut,
    MemberIn,
    TeamIn,
    TeamList,
    TeamOut,
)
from proxy.services import teams

teams_router = APIRouter(prefix="/api/admin/teams", tags=["admin"])
budgets_router = APIRouter(prefix="/api/admin/budgets", tags=["admin"])
user_router = APIRouter(prefix="/api/llm/budgets", tags=["llm"])

TeamName = Annotated[str, Path(pattern=TEAM_NAME_PATTERN)]
UserId = Annotated[str, Path(min_length=1, max_length=255)]
Scope = Annotated[Literal["user", "key", "team"], Path()]
Subject = Annotated[str, Path(min_length=1, max_length=255)]
Period = Annotated[Literal["day", "week", "month"], Path()]
CHANGE_ERRORS = {**ADMIN_ERRORS, 409: ADMIN_ERRORS[401]}


@teams_router.get("", response_model=TeamList, responses=ADMIN_ERRORS,
                  summary="List teams and their members")
async def list_teams(state: StateDep, admin: AdminUser) -> TeamList:
    return TeamList(teams=await teams.list_teams(state))


@teams_router.post("", response_model=TeamOut, status_code=201, responses=CHANGE_ERRORS,
                   summary="Create a team")
async def create_team(body: TeamIn, state: StateDep, admin: AdminUser) -> TeamOut:
    return await teams.create_team(state, body, admin.sub)


@teams_router.delete("/{team}", response_model=TeamOut, responses=ADMIN_ERRORS,
                     summary="Delete a team, its memberships and its budgets")
async def delete_team(team: TeamName, state: StateDep, admin: AdminUser) -> TeamOut:
    return await teams.delete_team(state, team)


@teams_router.post("/{team}/members", response_model=TeamOut, responses=CHANGE_ERRORS,
                   summary="Add a user to a team (a user is in one team at most)")
async def add_member(team: TeamName, body: MemberIn, state: StateDep, admin: AdminUser
                     ) -> TeamOut:
    return await teams.add_member(state, team, body.user, admin.sub)


@teams_router.delete("/{team}/members/{user}", response_model=TeamOut, responses=ADMIN_ERRORS,
                     summary="Remove a user from a team")
async def remove_member(team: TeamName, user: UserId, state: StateDep, admin: AdminUser
                        ) -> TeamOut:
    return await teams.remove_member(state, team, user)


@budgets_router.get("", response_model=BudgetList, responses=ADMIN_ERRORS,
                    summary="Every budget, with what it has spent in its current period")
async def list_budgets(state: StateDep, admin: AdminUser) -> BudgetList:
    return await teams.budget_list(state)


@budgets_router.put("/{scope}/{subject}/{period}", response_model=BudgetOut,
                    responses=ADMIN_ERRORS,
                    summary="Set the budget of a user, an API key or a team for a period")
async def set_budget(scope: Scope, subject: Subject, period: Period, body: BudgetIn,
                     state: StateDep, admin: AdminUser) -> BudgetOut:
    return await teams.set_budget(state, scope, subject, period, body, admin.sub)


@budgets_router.delete("/{scope}/{subject}/{period}", status_code=204, responses=ADMIN_ERRORS,
                       summary="Remove a budget")
async def delete_budget(scope: Scope, subject: Subject, period: Period, state: StateDep,
                        admin: AdminUser) -> Response:
    await teams.delete_budget(state, scope, subject, period)
    return Response(status_code=204)


@user_router.get("", response_model=BudgetList, responses=ERRORS,
                 summary="The budgets your requests count against, with what each has spent")
async def my_budgets(state: StateDep, user: CurrentUser) -> BudgetList:
    return await teams.budget_list(state, user)
