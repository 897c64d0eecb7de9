"""Audit retention in the running app, in process, on SQLite and the real Postgres: rows older
than `PROXY_AUDIT_RETENTION_DAYS` are deleted every `PROXY_AUDIT_PRUNE_INTERVAL_SECONDS`. (The
command line's `prune-audit` is tested in tests/proxy/test_audit_retention.py.)"""

from __future__ import annotations

import asyncio
from datetime import timedelta

from tests.proxy.test_audit_retention import ROWS_FOR, add_rows, fresh
from tests.support.database import count_rows_async
from tests.support.proxy_app import MakeProxy
from tests.support.timing import wait_until_async


async def test_the_running_proxy_prunes_old_rows_periodically(make_proxy: MakeProxy,
                                                              database_url: str) -> None:
    proxy = await make_proxy(database_url=database_url, proxy_audit_retention_days=30,
                             proxy_audit_prune_interval_seconds=0.5)
    old, kept = fresh("old"), fresh("kept")
    # add_rows runs an event loop of its own: off this one, where the app's prune task runs.
    await asyncio.to_thread(add_rows, database_url, old, timedelta(days=31), 3)
    await asyncio.to_thread(add_rows, database_url, kept, timedelta(days=29), 2)

    async def rows(user: str) -> int:
        return await count_rows_async(database_url, ROWS_FOR, user)

    async def none_left(user: str) -> bool:
        return await rows(user) == 0

    await wait_until_async(lambda: none_left(old), timeout=15)
    assert await rows(kept) == 2
    # Not only at startup: rows that age past the limit later go too.
    later = fresh("later")
    await asyncio.to_thread(add_rows, database_url, later, timedelta(days=45), 4)
    await wait_until_async(lambda: none_left(later), timeout=15)
    assert await rows(kept) == 2
    # Pruning went on beside the app's work: it still answers.
    assert (await proxy.client.get("/api/llm/status")).status_code == 200
