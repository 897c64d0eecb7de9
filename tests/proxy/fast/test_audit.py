"""The audit log, in process, on SQLite and the real Postgres: one row per request whatever its
outcome, the reason of a refused token, and a row the database refuses set aside without
stopping the others. Outages, restarts and kills need a process: tests/proxy/test_audit.py."""

from __future__ import annotations

import asyncio
import hashlib
import uuid
from pathlib import Path

import httpx
import pytest

from tests.support.database import count_rows_async
from tests.support.proxy_app import InProcessProxy, MakeProxy
from tests.support.timing import wait_until_async
from tests.support.tokens import auth, make_token

pytestmark = pytest.mark.usefixtures("sim")

ROWS_FOR = 'SELECT count(*) FROM audit_log WHERE "user" = $1'


async def generate(proxy: InProcessProxy, user: str, prompt: str = "audit me", **body: object
                   ) -> httpx.Response:
    return await proxy.client.post("/api/llm/generate", headers=auth(user),
                                   json={"model": "llama3.2", "prompt": prompt, "stream": False,
                                         "options": {"num_predict": 3}, **body})


async def wait_rows(database_url: str, user: str, expected: int, timeout: float = 20) -> int:
    """Poll until `user` has `expected` rows or the (scaled) budget is spent; return the count."""
    found = [-1]

    async def reached() -> bool:
        try:
            found[0] = await count_rows_async(database_url, ROWS_FOR, user)
        except Exception:
            found[0] = -1
        return found[0] == expected

    try:
        await wait_until_async(reached, timeout, interval=0.1)
    except AssertionError:
        pass
    return found[0]


async def test_every_kind_of_request_gets_exactly_one_row(make_proxy: MakeProxy,
                                                          database_url: str) -> None:
    proxy = await make_proxy(database_url=database_url, proxy_rate_limit="3/minute")
    user = f"u-{uuid.uuid4().hex[:8]}"
    responses = [await generate(proxy, user) for _ in range(3)]            # 200 ×3
    responses.append(await generate(proxy, user))                          # 429
    responses.append(await generate(proxy, user, model="x y"))             # 422
    responses.append(await proxy.client.post("/api/llm/generate",          # 401, no user
                                             json={"model": "llama3.2"}))
    assert [r.status_code for r in responses] == [200, 200, 200, 429, 422, 401]
    # The server names every request (X-Request-ID) and each name gets its own row, in
    # whichever batch the writer flushes it: wait for all six, then count.
    ids = [r.headers["x-request-id"] for r in responses]
    assert len(set(ids)) == len(ids)

    async def rows_per_request() -> list[int]:
        return [await count_rows_async(database_url,
                                       "SELECT count(*) FROM audit_log WHERE id = $1", rid)
                for rid in ids]

    async def one_each() -> bool:
        return await rows_per_request() == [1] * len(ids)

    async def queue_empty() -> bool:
        return await proxy.metric("llm_proxy_audit_queue_depth") == 0

    await wait_until_async(one_each, timeout=20)
    await wait_until_async(queue_empty)
    assert await rows_per_request() == [1] * len(ids)
    assert await count_rows_async(database_url, ROWS_FOR, user) == 5
    # The 401 has no user; its row carries the reason.
    assert await count_rows_async(
        database_url, 'SELECT count(*) FROM audit_log WHERE id = $1 AND "user" IS NULL '
        "AND status = 401 AND error LIKE $2", ids[-1], "%missing_token%") == 1
    assert await count_rows_async(database_url, 'SELECT count(*) FROM audit_log WHERE "user" = $1 '
                                  "AND status = 429", user) == 1
    digest = hashlib.sha256(b"audit me").hexdigest()
    assert await count_rows_async(
        database_url,
        'SELECT count(*) FROM audit_log WHERE "user" = $1 AND prompt_sha256 = $2 '
        "AND prompt_text IS NULL AND completion_tokens = 3 AND ttft_ms > 0",
        user, digest) == 3


async def test_auth_failures_are_audited_with_their_reason(make_proxy: MakeProxy,
                                                           database_url: str) -> None:
    proxy = await make_proxy(database_url=database_url)
    expired = make_token("eve", ttl=-300)
    assert (await proxy.client.get("/api/llm/models",
                                   headers={"Authorization": f"Bearer {expired}"})
            ).status_code == 401

    async def audited() -> bool:
        return await count_rows_async(database_url, "SELECT count(*) FROM audit_log WHERE "
                                      "status = 401 AND error LIKE $1", "%expired%") >= 1

    await wait_until_async(audited)


def _refuse_prompts_of_13_chars(database_url: str) -> None:
    """Make the real database refuse some rows as data (a constraint), not as an outage."""
    import sqlite3

    import asyncpg

    if database_url.startswith("sqlite"):
        with sqlite3.connect(database_url.split("///", 1)[1]) as conn:
            conn.execute("CREATE TRIGGER IF NOT EXISTS refuse_13 BEFORE INSERT ON audit_log "
                         "WHEN NEW.prompt_chars = 13 BEGIN SELECT RAISE(ABORT, 'refused'); END")
        return

    async def run() -> None:
        conn = await asyncpg.connect(database_url)
        try:
            await conn.execute("ALTER TABLE audit_log ADD CONSTRAINT refuse_13 "
                               "CHECK (prompt_chars <> 13)")
        finally:
            await conn.close()

    asyncio.run(run())


async def test_a_row_the_database_refuses_goes_to_dead_letter_and_the_rest_are_stored(
    make_proxy: MakeProxy, database_url: str
) -> None:
    proxy = await make_proxy(database_url=database_url)
    await asyncio.to_thread(_refuse_prompts_of_13_chars, database_url)
    user = f"u-{uuid.uuid4().hex[:8]}"
    prompts = ["fine prompt 1", "a fine prompt", "fine", "another fine one"]
    assert [len(p) for p in prompts].count(13) == 2
    for prompt in prompts:
        assert (await generate(proxy, user, prompt=prompt)).status_code == 200
    # The two storable rows arrive; the two refused ones do not block them.
    assert await wait_rows(database_url, user, 2) == 2
    dead = Path(proxy.settings.proxy_audit_spool_path).parent / "audit-spool.rejected.jsonl"
    # Refused rows not kept in the dead-letter file fail this wait.
    await wait_until_async(lambda: dead.exists() and len(dead.read_text().splitlines()) >= 2)
    assert await proxy.metric("llm_proxy_audit_rows_rejected_total") == 2
    assert await proxy.metric("llm_proxy_audit_spooled_rows") == 0
    # Later rows still go straight to the database.
    assert (await generate(proxy, user, prompt="after that")).status_code == 200
    assert await wait_rows(database_url, user, 3) == 3
