"""Teams and budgets, in process: the admin API, a spent budget refused with its reset, a team
budget on two replicas (sharing the real Postgres and a Redis of this module's own) never
exceeded by more than one request's cost, the soft limit's metric, the gauges, and spend
rebuilt from the audit log after the Redis is flushed mid-period. A Redis of its own, because
FLUSHALL would wipe every other test's windows on the shared one."""

from __future__ import annotations

import asyncio
import subprocess
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import redis

from proxy.core.token_limits import REBUILT_CHECK_SECONDS
from tests.support.database import count_rows_async
from tests.support.proxy_app import InProcessProxy, MakeProxy
from tests.support.proxy_process import free_port
from tests.support.timing import wait_until, wait_until_async
from tests.support.tokens import admin_auth, auth

pytestmark = [pytest.mark.usefixtures("fixed_replies"), pytest.mark.postgres]

REPLY_TOKENS = 10
# Tokens mode at 1 per token: a request costs its tokens, the prompt ("hi", 1) and the reply.
COST = 1 + REPLY_TOKENS
PRICED = {"proxy_cost_mode": "tokens",
          "proxy_cost_per_1k_tokens": {"*": {"prompt": 1000.0, "completion": 1000.0}},
          "proxy_rate_limit": "10000/minute", "proxy_concurrency_limit": 100}


@pytest.fixture
def fixed_replies(sim) -> None:
    sim.configure(reply_tokens=REPLY_TOKENS)


@pytest.fixture(scope="module")
def private_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    port = free_port()
    workdir = tmp_path_factory.mktemp("redis")
    process = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "no", "--dir", str(workdir)],
        stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    client = redis.Redis(port=port)
    try:
        wait_until(lambda: _answers(client))
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        client.close()
        process.terminate()
        process.wait()


def _answers(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except redis.ConnectionError:
        return False


@pytest.fixture(scope="module")
async def replicas(make_proxy: MakeProxy, postgres_url: str, private_redis: str
                   ) -> tuple[InProcessProxy, InProcessProxy]:
    settings = {**PRICED, "database_url": postgres_url, "redis_url": private_redis}
    return await make_proxy(**settings), await make_proxy(**settings)


def fresh(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


async def admin(proxy: InProcessProxy, method: str, path: str, **body: Any) -> Any:
    response = await proxy.client.request(method, path, headers=admin_auth(),
                                          json=body if body else None)
    assert response.status_code in (200, 201), response.text
    return response.json()


async def generate(proxy: InProcessProxy, user: str) -> httpx.Response:
    return await proxy.client.post("/api/llm/generate", headers=auth(user), json={
        "model": "llama3.2", "prompt": "hi", "stream": False})


async def team_with(proxy: InProcessProxy, members: list[str], amount: float,
                    soft_limit: float | None = None) -> str:
    team = fresh("team")
    await admin(proxy, "POST", "/api/admin/teams", name=team, description="tests")
    for user in members:
        await admin(proxy, "POST", f"/api/admin/teams/{team}/members", user=user)
    await admin(proxy, "PUT", f"/api/admin/budgets/team/{team}/day", amount=amount,
                soft_limit=soft_limit)
    return team


async def spent(proxy: InProcessProxy, scope: str, subject: str) -> float:
    listing = await admin(proxy, "GET", "/api/admin/budgets")
    return float(next(b["spent"] for b in listing["budgets"]
                      if (b["scope"], b["subject"]) == (scope, subject)))


async def test_teams_have_members_who_are_in_one_team_at_most(replicas) -> None:
    a, b = replicas
    user = fresh("user")
    first = await team_with(a, [user], 100)
    second = fresh("team")
    await admin(a, "POST", "/api/admin/teams", name=second)
    moved = await b.client.post(f"/api/admin/teams/{second}/members", headers=admin_auth(),
                                json={"user": user})
    assert moved.status_code == 409
    assert moved.json()["error"] == (f"user '{user}' is in team '{first}'; remove them there "
                                     "first (a user is in one team at most)")
    teams = {t["name"]: t for t in (await admin(b, "GET", "/api/admin/teams"))["teams"]}
    assert teams[first]["members"] == [user] and teams[second]["members"] == []
    left = await admin(a, "DELETE", f"/api/admin/teams/{first}/members/{user}")
    assert left["members"] == []
    await admin(a, "POST", f"/api/admin/teams/{second}/members", user=user)
    deleted = await admin(a, "DELETE", f"/api/admin/teams/{second}")
    assert deleted["members"] == [user]
    assert second not in {t["name"] for t in (await admin(a, "GET", "/api/admin/teams"))["teams"]}


async def test_a_team_budget_on_two_replicas_is_exceeded_by_one_request_at_most(
        replicas, postgres_url: str) -> None:
    a, b = replicas
    members = [fresh("member") for _ in range(4)]
    amount = 5.5 * COST
    team = await team_with(a, members, amount, soft_limit=2 * COST)
    for proxy in replicas:  # the other replica learns of the team within its refresh
        await proxy.app.state.proxy.budgets.refresh()
    before = sum([await proxy.counted("llm_proxy_budget_soft_limit_crossings_total",
                                      scope="team") for proxy in replicas])

    statuses: list[int] = []
    errors: list[str] = []
    # Rounds of 20 at once, alternating replicas, until it is spent. Near the limit requests run
    # one at a time (the others are `budget_busy`), so a round may admit only one, or none on a
    # busy machine: the bound is generous, the loop ends as soon as the budget is spent.
    for _ in range(60):
        answers = await asyncio.gather(*(generate(replicas[i % 2], members[i % 4])
                                         for i in range(20)))
        statuses += [r.status_code for r in answers]
        errors += [r.json().get("error", "") for r in answers if r.status_code == 429]
        if any("is spent" in e for e in errors):
            break
    assert statuses.count(200) >= 5
    assert set(statuses) <= {200, 429}
    refusal = next(e for e in errors if "is spent" in e)
    assert refusal.startswith(f"the daily budget of team '{team}' ({amount:g}) is spent; it "
                              "resets at ")
    total = await spent(b, "team", team)
    assert amount <= total <= amount + COST
    assert total == statuses.count(200) * COST
    # The audit log says the same: every admitted request's row names the team.
    await wait_until_async(lambda: _stored(postgres_url, "team", team, statuses.count(200)))
    after = sum([await proxy.counted("llm_proxy_budget_soft_limit_crossings_total",
                                     scope="team") for proxy in replicas])
    assert after - before == 1

    refused = await generate(a, members[0])
    assert refused.status_code == 429
    assert 0 < int(refused.headers["Retry-After"]) <= 86_400


async def test_a_user_sees_the_budgets_their_requests_count_against(replicas) -> None:
    a, b = replicas
    member, outsider = fresh("member"), fresh("outsider")
    team = await team_with(a, [member], 100 * COST)
    await admin(a, "PUT", f"/api/admin/budgets/user/{member}/week", amount=50 * COST)
    await admin(a, "PUT", f"/api/admin/budgets/user/{outsider}/day", amount=7 * COST)
    for proxy in replicas:
        await proxy.app.state.proxy.budgets.refresh()
    assert (await generate(a, member)).status_code == 200

    mine = await b.client.get("/api/llm/budgets", headers=auth(member))
    assert mine.status_code == 200, mine.text
    listed = {(x["scope"], x["subject"], x["period"]): x for x in mine.json()["budgets"]}
    # Their team's and their own, with the request just made, and nobody else's.
    assert set(listed) == {("team", team, "day"), ("user", member, "week")}
    assert listed[("team", team, "day")]["spent"] == COST
    assert listed[("user", member, "week")]["spent"] == COST
    others = (await b.client.get("/api/llm/budgets", headers=auth(outsider))).json()
    assert [(x["scope"], x["subject"]) for x in others["budgets"]] == [("user", outsider)]


async def test_gauges_show_team_spend_and_keys_near_their_limit(replicas) -> None:
    a, _ = replicas
    user = fresh("gauged")
    team = await team_with(a, [user], 100 * COST, soft_limit=50 * COST)
    assert (await generate(a, user)).status_code == 200
    key = await admin(a, "POST", "/api/admin/keys", name="near", owner=user,
                      token_limit_per_minute=COST)
    near_before = await a.counted("llm_proxy_api_keys_near_limit", limit="tokens_per_minute")
    used = await a.client.post("/api/llm/generate", headers={
        "Authorization": f"Bearer {key['secret']}"}, json={"model": "llama3.2", "prompt": "hi",
                                                          "stream": False})
    assert used.status_code == 200
    await a.app.state.proxy.budgets.refresh()
    labels = {"team": team, "period": "day"}
    assert await a.metric("llm_proxy_team_budget_spend", **labels) == 2 * COST
    assert await a.metric("llm_proxy_team_budget_limit", **labels) == 100 * COST
    assert await a.metric("llm_proxy_team_budget_soft_limit", **labels) == 50 * COST
    assert await a.metric("llm_proxy_api_keys_near_limit",
                          limit="tokens_per_minute") == near_before + 1


async def test_spend_is_rebuilt_from_the_audit_log_after_redis_is_flushed(
        replicas, postgres_url: str, private_redis: str) -> None:
    a, b = replicas
    user = fresh("rebuilt")
    team = await team_with(a, [user], 1000 * COST)
    key = await admin(a, "POST", "/api/admin/keys", name="budgeted", owner=user)
    await admin(a, "PUT", f"/api/admin/budgets/key/{key['id']}/month", amount=1000 * COST)
    await admin(a, "PUT", f"/api/admin/budgets/user/{user}/week", amount=1000 * COST)
    for proxy in replicas:
        await proxy.app.state.proxy.budgets.refresh()
    for i in range(3):
        assert (await generate(replicas[i % 2], user)).status_code == 200
    keyed = await b.client.post("/api/llm/generate", headers={
        "Authorization": f"Bearer {key['secret']}"}, json={"model": "llama3.2", "prompt": "hi",
                                                          "stream": False})
    assert keyed.status_code == 200
    assert await spent(a, "team", team) == 4 * COST
    await wait_until_async(lambda: _stored(postgres_url, "user", user, 4))

    redis.Redis.from_url(private_redis).flushall()
    assert await spent(a, "team", team) == 0  # Redis has lost it...

    assert (await generate(b, user)).status_code == 200  # ...the next request rebuilds it
    assert await spent(a, "team", team) == 5 * COST
    assert await spent(a, "user", user) == 5 * COST
    assert await spent(a, "key", key["id"]) == COST


# Two answers fit under it, a third does not: 2 x COST < DAY_TOKENS < 3 x COST.
DAY_TOKENS = 2 * COST + COST // 2


@pytest.mark.parametrize("backend", ["redis", "memory"])
async def test_day_token_windows_are_rebuilt_from_the_audit_log(
        make_proxy: MakeProxy, postgres_url: str, private_redis: str, backend: str) -> None:
    settings = {**PRICED, "database_url": postgres_url, "proxy_token_limit_per_day": DAY_TOKENS,
                **({"redis_url": private_redis} if backend == "redis" else {})}
    before = await make_proxy(**settings)
    user = fresh("daily")
    for _ in range(2):
        assert (await generate(before, user)).status_code == 200
    await wait_until_async(lambda: _stored(postgres_url, "user", user, 2))
    if backend == "redis":
        # Redis loses the windows; the proxy looks for the marker at most once a second.
        redis.Redis.from_url(private_redis).flushall()
        after = before
        await asyncio.sleep(REBUILT_CHECK_SECONDS)
    else:
        after = await make_proxy(**settings)  # a new process: its memory starts empty

    # Rebuilt: 2 x COST already spent today, so one more answer fits and then the day is spent.
    # (Counted from zero, two more would be admitted.)
    assert (await generate(after, user)).status_code == 200
    refused = await generate(after, user)
    assert refused.status_code == 429, refused.text
    assert refused.json()["error"].startswith(f"token limit reached: {DAY_TOKENS} tokens per day")


async def _stored(database_url: str, column: str, value: str, rows: int) -> bool:
    """Whether the audit log holds `rows` successful rows whose `column` is `value`."""
    return await count_rows_async(
        database_url, f'SELECT count(*) FROM audit_log WHERE "{column}" = $1 AND status = 200',
        value) == rows


async def test_a_user_budget_in_memory_refuses_once_spent(make_proxy: MakeProxy) -> None:
    proxy = await make_proxy(**PRICED)
    user = fresh("solo")
    await admin(proxy, "PUT", f"/api/admin/budgets/user/{user}/month", amount=1.5 * COST)
    assert (await generate(proxy, user)).status_code == 200
    assert (await generate(proxy, user)).status_code == 200
    refused = await generate(proxy, user)
    assert refused.status_code == 429
    assert refused.json()["error"].startswith(
        f"the monthly budget of user '{user}' ({1.5 * COST:g}) is spent; it resets at ")
    reset = int(refused.headers["X-Quota-Reset"])
    assert time.gmtime(reset).tm_mday == 1 and reset > time.time()
    assert await spent(proxy, "user", user) == 2 * COST
