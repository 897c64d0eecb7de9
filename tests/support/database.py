"""The real Postgres of the test machine: a fresh database per use, and direct row counts."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import asyncpg

POSTGRES_ADMIN_URL = os.environ.get(
    "TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)


def admin_execute(sql: str) -> None:
    """Run one statement on the test server as its administrator, on an event loop of its own
    in a thread of its own.

    Not `asyncio.run` here, which leaves the thread without a current loop: Pulumi's mocks
    (tests/infra) read it later in the same session. Nor a loop in this thread: where one is
    already running (Playwright's sync API runs one in the browser tests), another cannot."""
    import asyncio
    from concurrent.futures import ThreadPoolExecutor

    async def run() -> None:
        conn = await asyncpg.connect(POSTGRES_ADMIN_URL)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    with ThreadPoolExecutor(max_workers=1) as worker:
        worker.submit(asyncio.run, run()).result()


def postgres_database(prefix: str = "proxy_test") -> Iterator[str]:
    """A fresh database on the test server, dropped afterwards (a generator: `yield from` it)."""
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    admin_execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"{POSTGRES_ADMIN_URL.rsplit('/', 1)[0]}/{name}"
    finally:
        admin_execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def count_rows_async(database_url: str, sql: str, *args: object) -> int:
    """Run a COUNT query directly against the database (not through the proxy); `$1`, `$2`
    are the arguments on either database."""
    import sqlite3

    if database_url.startswith("sqlite"):
        path = database_url.split("///", 1)[1]
        with sqlite3.connect(path) as conn:
            return int(conn.execute(sql.replace("$1", "?").replace("$2", "?"), args)
                       .fetchone()[0])

    conn = await asyncpg.connect(database_url.replace("+asyncpg", ""))
    try:
        return int(await conn.fetchval(sql, *args))
    finally:
        await conn.close()


def count_rows(database_url: str, sql: str, *args: object) -> int:
    """`count_rows_async` for tests that have no event loop of their own running."""
    import asyncio

    return asyncio.run(count_rows_async(database_url, sql, *args))
