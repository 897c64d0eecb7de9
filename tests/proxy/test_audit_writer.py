"""The audit writer in process: it stops when it is closed, whatever it was doing (a proxy that
cannot finish its shutdown holds its port and its rows until someone kills it, and a kill loses
the queue), and a spool left by a crash mid-write loses no row."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from proxy.audit.record import AuditRecord
from proxy.audit.writer import AuditWriter
from proxy.core.db import create_engine, migrate
from proxy.core.metrics import ProxyMetrics
from proxy.core.settings import Settings
from tests.support.database import count_rows_async
from tests.support.proxy_process import free_port, metric_value
from tests.support.timing import scaled, wait_until_async
from tests.support.tokens import SECRET

ROW = "SELECT count(*) FROM audit_log WHERE id = $1"


def writer_settings(tmp_path: Path, database_url: str) -> Settings:
    return Settings(_env_file=None, jwt_secret=SECRET,  # type: ignore[call-arg]
                    database_url=database_url,
                    proxy_audit_spool_path=str(tmp_path / "spool.jsonl"),
                    # No retention task: `close()` cancels the writer without yielding first.
                    proxy_audit_retention_days=0)


async def test_a_row_arriving_as_the_writer_closes_does_not_keep_it_running(
        tmp_path: Path) -> None:
    settings = writer_settings(tmp_path, f"sqlite+aiosqlite:///{tmp_path / 'audit.db'}")
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
        assert await count_rows_async(settings.database_url, ROW, "the-last-row") == 1
    finally:
        if closing is not None and not closing.done():
            closing.cancel()  # cancels the writer it awaits, so that it stops running here
            await asyncio.wait({closing})
        await engine.dispose()


async def test_a_spool_line_cut_short_by_a_crash_swallows_no_row(tmp_path: Path) -> None:
    """A process killed mid-append leaves a last line with no end. The next row appended must
    not be glued onto it (the pair would parse as neither); the broken line itself is set aside
    in the dead-letter file, not silently dropped."""
    spool = tmp_path / "spool.jsonl"
    before = AuditRecord(id="stored-before-the-crash", endpoint="/api/llm/generate", user="u")
    cut_short = AuditRecord(id="cut-short-by-the-crash", endpoint="/api/llm/generate", user="u")
    spool.write_text(json.dumps(before.row(), default=str) + "\n"
                     + json.dumps(cut_short.row(), default=str)[:60])
    after = AuditRecord(id="appended-after-the-crash", endpoint="/api/llm/generate", user="u")

    # A proxy whose database is down appends behind the spool it found.
    down = writer_settings(tmp_path, f"postgresql://postgres@127.0.0.1:{free_port()}/none")
    engine = create_engine(down)
    writer = AuditWriter(engine, down, ProxyMetrics())
    await writer.start()
    writer.submit(after)
    await writer.close()
    await engine.dispose()

    # The next one, with its database, replays the spool.
    settings = writer_settings(tmp_path, f"sqlite+aiosqlite:///{tmp_path / 'audit.db'}")
    engine = create_engine(settings)
    await migrate(engine)
    metrics = ProxyMetrics()
    writer = AuditWriter(engine, settings, metrics)
    await writer.start()
    try:
        # Replayed (the gauge counts down chunk by chunk), then the file emptied.
        await wait_until_async(
            lambda: metric_value(metrics.render().decode(), "llm_proxy_audit_spooled_rows") == 0
            and spool.read_text() == "")
        for row_id, expected in ((before.id, 1), (after.id, 1), (cut_short.id, 0)):
            assert await count_rows_async(settings.database_url, ROW, row_id) == expected, row_id
        dead_letter = (tmp_path / "spool.rejected.jsonl").read_text().splitlines()
        assert len(dead_letter) == 1
        assert json.loads(dead_letter[0])["spool_line"] == (
            json.dumps(cut_short.row(), default=str)[:60])
        assert spool.read_text() == ""
    finally:
        await writer.close()
        await engine.dispose()
