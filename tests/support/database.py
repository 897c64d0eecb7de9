"""The real Postgres of the test machine: a fresh database per use, and direct row counts."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import asyncpg

POSTGRES_ADMIN_URL = os.environ.get(
    "TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)


def postgres_database() -> Iterator[str]:
    """A fresh database on the test server, dropped afterwards (a generator: `yield from` it)."""
    import asyncio

    name = f"proxy_test_{uuid.uuid4().hex[:10]}"
    admin_url = POSTGRES_ADMIN_URL

    async def run(sql: str) -> None:
        conn = await asyncpg.connect(admin_url)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(run(f'CREATE DATABASE "{name}"'))
    base = admin_url.rsplit("/", 1)[0]
    try:
        yield f"{base}/{name}"
    finally:
        asyncio.run(run(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


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
