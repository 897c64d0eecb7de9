"""Limits held across replicas (`--rows limits`): two proxy processes sharing one Postgres and
one Redis, as a scaled-out deployment runs, and how precisely the limits they share hold.

- **Rate limit**: `rate_requests` requests at once from one user, spread over both replicas,
  under PROXY_RATE_LIMIT=10/minute (its concurrency limit raised above the burst, so that only
  the rate limit refuses): exactly 10 must be admitted, the rest refused with 429.
- **Token limit**: `token_streams` streams at once from another user, under 1000 tokens a
  minute (PROXY_TOKEN_LIMIT_USERS): the generated tokens delivered against the bound the README
  documents, the limit plus PROXY_TOKEN_COUNT_EVERY - 1 per stream running when it is reached.
- **Budget**: a third user's daily budget of 0.5 in the `tokens` cost model at 1 per 1000
  generated tokens (50 tokens a request: 0.05 each), and rounds of `budget_requests` requests
  at once until every one is refused as over budget: what was spent (the proxy's own count, and
  the requests admitted times their cost) against the bound the README documents, the budget
  plus one request's cost.

Each user is new to Redis (a random name), so no earlier run's counters count. The simulator
streams 400 tokens a second, so that the token limit is reached while the streams run.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from tests.support.bench.driver import Outcome, Target, burst, new_session
from tests.support.database import postgres_database
from tests.support.proxy_process import start_proxy, stop_proxy
from tests.support.simulator.process import run_simulator
from tests.support.tokens import admin_auth, make_token

REDIS_URL = "redis://127.0.0.1:6379/0"
RATE_LIMIT = 10  # per minute, per user: the proxy's default
TOKEN_LIMIT = 1000  # per minute, for the token-limit user
COUNT_EVERY = 8  # PROXY_TOKEN_COUNT_EVERY: the proxy's default
STREAM_TOKENS = 400  # each stream asks for more than its share of the limit
REPLICAS = 2
BUDGET = 0.5  # a day's, in the cost model's money
BUDGET_TOKENS = 50  # generated tokens a budgeted request asks for (and gets)
PRICE_PER_1K = 1.0  # of generated tokens: a request costs 0.05
BUDGET_ROUNDS = 100  # at most; the last round is the one that is refused whole
BUDGET_REFRESH_SECONDS = 0.5  # PROXY_BUDGET_REFRESH_SECONDS: the other replica learns fast


@dataclass(frozen=True)
class LimitCounts:
    rate_requests: int = 200
    token_streams: int = 20
    budget_requests: int = 20


QUICK_LIMITS = LimitCounts(rate_requests=20, token_streams=4, budget_requests=4)


def _refused(outcome: Outcome) -> bool:
    return outcome.status == 429


def _rate_limit(outcomes: list[Outcome]) -> dict[str, Any]:
    admitted = sum(o.ok for o in outcomes)
    refused = sum(_refused(o) for o in outcomes)
    return {"requests": len(outcomes), "limit": RATE_LIMIT, "admitted": admitted,
            "refused": refused, "errors": len(outcomes) - admitted - refused}


def _token_limit(outcomes: list[Outcome], windows: int) -> dict[str, Any]:
    """Generated tokens delivered: each streamed line but the last (the done line, or the
    proxy's error line for a stream the limit stopped) carries one token."""
    started = [o for o in outcomes if o.ok]
    stopped = sum(b'"status":429' in o.last.replace(b" ", b"") for o in started)
    return {"streams": len(outcomes), "limit": TOKEN_LIMIT, "count_every": COUNT_EVERY,
            "windows": windows, "delivered": sum(max(0, o.lines - 1) for o in started),
            "bound": windows * (TOKEN_LIMIT + len(outcomes) * (COUNT_EVERY - 1)),
            "refused": sum(_refused(o) for o in outcomes), "stopped": stopped,
            "errors": sum(not o.ok and not _refused(o) for o in outcomes)}


async def _budget(session: aiohttp.ClientSession, replicas: list[str], targets: list[Target],
                  user: str, requests: int) -> dict[str, Any]:
    """Rounds of `requests` at once until a round is refused whole as over budget."""
    admin = admin_auth()
    async with session.put(f"{replicas[0]}/api/admin/budgets/user/{user}/day",
                           json={"amount": BUDGET}, headers=admin) as response:
        if response.status != 200:
            raise RuntimeError(f"setting the budget: {response.status} {await response.text()}")
    await asyncio.sleep(2 * BUDGET_REFRESH_SECONDS)  # the other replica has read it by then
    body = {"model": "llama3.2", "prompt": "benchmark", "stream": False,
            "options": {"num_predict": BUDGET_TOKENS}}
    admitted = busy = errors = rounds = 0
    while rounds < BUDGET_ROUNDS:
        rounds += 1
        outcomes = await burst(session, targets, body, requests)
        admitted += sum(o.ok for o in outcomes)
        # Told apart by their messages: the /api/llm dialect's error body has no code.
        busy += sum(_refused(o) and "is nearly spent" in o.detail for o in outcomes)
        errors += sum(not o.ok and not _refused(o) for o in outcomes)
        if all(_refused(o) and " is spent" in o.detail for o in outcomes):
            break
    async with session.get(f"{replicas[1]}/api/admin/budgets", headers=admin) as response:
        listed = await response.json()
    spent = next(b["spent"] for b in listed["budgets"] if b["subject"] == user)
    cost = BUDGET_TOKENS / 1000 * PRICE_PER_1K
    return {"requests_per_round": requests, "rounds": rounds, "budget": BUDGET,
            "request_cost": round(cost, 6), "admitted": admitted, "busy": busy,
            "spent": round(spent, 6), "admitted_cost": round(admitted * cost, 6),
            "bound": round(BUDGET + cost, 6), "errors": errors}


async def _away_from_minute_turn(margin: float = 5.0) -> None:
    """Start a measurement early in a UTC minute: token limits count in fixed minute windows,
    and one that turns during the burst would admit a second window's worth."""
    into = time.time() % 60
    if into > 60 - margin:
        await asyncio.sleep(60 - into + 0.5)


async def _measure(replicas: list[str], users: dict[str, str], counts: LimitCounts
                   ) -> dict[str, Any]:
    body = {"model": "llama3.2", "prompt": "benchmark", "stream": False,
            "options": {"num_predict": 16}}
    streamed = {**body, "stream": True, "options": {"num_predict": STREAM_TOKENS}}

    def targets(user: str) -> list[Target]:
        headers = {"Authorization": f"Bearer {make_token(user, ttl=3600)}"}
        return [Target(f"replica{i}", f"{url}/api/llm/generate", headers)
                for i, url in enumerate(replicas)]

    async with new_session() as session:
        # The rate limit's window moves with the requests: any start will do.
        rate = _rate_limit(await burst(session, targets(users["rate"]), body,
                                       counts.rate_requests))
        await _away_from_minute_turn()
        first_window = time.time() // 60
        outcomes = await burst(session, targets(users["tokens"]), streamed,
                               counts.token_streams)
        windows = int(time.time() // 60 - first_window) + 1
        budget = await _budget(session, replicas, targets(users["budget"]), users["budget"],
                               counts.budget_requests)
    return {"rate_limit": rate, "token_limit": _token_limit(outcomes, windows),
            "budget": budget}


def run(counts: LimitCounts) -> dict[str, Any]:
    """Start the simulator and two replicas on one fresh Postgres database and the shared
    Redis, measure, stop them."""
    users = {kind: f"bench-{kind}-{secrets.token_hex(4)}" for kind in ("rate", "tokens", "budget")}
    # Only the rate-limit user meets the rate limit; the others' requests must not meet it first.
    unlimited = {users[kind]: "100000/minute" for kind in ("tokens", "budget")}
    with run_simulator(first_token_delay=0.0, tokens_per_second=400, num_parallel=64,
                       max_queue=4 * counts.rate_requests) as sim, \
            tempfile.TemporaryDirectory(prefix="bench-limits-") as tmp, \
            contextlib.ExitStack() as stack:
        sim.configure(reply_tokens=STREAM_TOKENS)  # a control setting, not a flag
        env = {
            "OLLAMA_URL": sim.url, "REDIS_URL": REDIS_URL,
            "DATABASE_URL": stack.enter_context(
                contextlib.contextmanager(postgres_database)("proxy_bench")),
            "PROXY_RATE_LIMIT": f"{RATE_LIMIT}/minute",
            # Above every burst: here only the limit measured refuses.
            "PROXY_CONCURRENCY_LIMIT": str(2 * counts.rate_requests),
            "PROXY_RATE_LIMIT_USERS": json.dumps(unlimited),
            "PROXY_TOKEN_LIMIT_USERS": json.dumps(
                {users["tokens"]: {"per_minute": TOKEN_LIMIT}}),
            "PROXY_TOKEN_COUNT_EVERY": str(COUNT_EVERY),
            "PROXY_COST_MODE": "tokens",
            "PROXY_COST_PER_1K_TOKENS": json.dumps(
                {"*": {"prompt": 0.0, "completion": PRICE_PER_1K}}),
            "PROXY_BUDGET_REFRESH_SECONDS": str(BUDGET_REFRESH_SECONDS),
            "PROXY_LOG_LEVEL": "warning", "PROXY_WORKERS": "1",
        }
        urls = []
        for index in range(REPLICAS):
            folder = Path(tmp) / f"replica{index}"
            folder.mkdir()
            proxy = start_proxy(folder, env)
            stack.callback(stop_proxy, proxy)
            urls.append(proxy.url)
        figures = asyncio.run(_measure(urls, users, counts))
    return {"replicas": REPLICAS, **figures}
