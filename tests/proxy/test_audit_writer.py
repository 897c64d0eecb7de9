"""The audit writer stops when it is closed, whatever it was doing: a proxy that cannot finish
its shutdown holds its port and its rows until someone kills it (and a kill loses the queue)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from proxy.audit.record import AuditRecord
from proxy.audit.writer import AuditWriter
from proxy.core.db import create_engine, migrate
from proxy.core.metrics import ProxyMetrics
from proxy.core.settings import Settings
from tests.support.database import count_rows_async
from tests.support.timing import scaled
from tests.support.tokens import SECRET


async def test_a_row_arriving_as_the_writer_closes_does_not_keep_it_running(
        tmp_path: Path) -> None:
    settings = Settings(_env_file=None, jwt_secret=SECRET,  # type: ignore[call-arg]
                        database_url=f"sqlite+aiosqlite:///{tmp_path / 'audit.db'}",
                        proxy_audit_spool_path=str(tmp_path / "spool.jsonl"),
                        # No retention task: `close()` cancels the writer without yielding first.
                        proxy_audit_retention_days=0)
    engine = create_engine(settings)
    await migrate(engine)
    writer = AuditWriter(engine, settings, ProxyMetrics())
    await writer.start()
    closing: asyncio.Task[None] | None = None
    try:
        await asyncio.sleep(0.05)  # the writer is waiting for rows
        last = AuditRecord(id="the-last-row", endpoint="/api/llm/generate", user="closer")
        last.status = 200
        # The row wakes the writer in the same turn of the loop as the cancellation.
        writer.submit(last)
        closing = asyncio.create_task(writer.close())
        # asyncio.wait, not wait_for: cancelling close() would cancel the writer a second time
        # and hide a writer that ignored the first.
        await asyncio.wait({closing}, timeout=scaled(10))
        assert closing.done(), "close() is still waiting for a writer that keeps running"
        await closing
        assert await count_rows_async(settings.database_url,
                                      "SELECT count(*) FROM audit_log WHERE id = $1",
                                      "the-last-row") == 1
    finally:
        if closing is not None and not closing.done():
            closing.cancel()  # cancels the writer it awaits, so that it stops running here
            await asyncio.wait({closing})
        await engine.dispose()
