"""The audit writer: batches rows off the request path; nothing accepted is lost.

- Requests only `submit()` (a queue put); one background task writes batches of up to
  `PROXY_AUDIT_BATCH_SIZE` rows, at least every `PROXY_AUDIT_FLUSH_SECONDS`.
- When the database refuses a batch, the batch is appended to a local spool file (JSON lines,
  fsynced) and later batches follow it there, so order is kept. Every
  `PROXY_AUDIT_RETRY_SECONDS` the spool is replayed into the database; the file is emptied only
  after every row in it is stored. Inserts ignore ids already present, so a replay interrupted
  halfway can simply run again.
- A spool left behind by an earlier process is replayed at startup.
- `close()` (graceful shutdown) drains the queue to the database or, failing that, to the spool.
- A hard-killed process loses only the rows still in the in-memory queue: at most the requests
  that finished in the last flush interval.
- A batch the database refuses while it is answering (bad data, not an outage) is retried row
  by row; a row refused on its own goes to a dead-letter file beside the spool
  (`<spool>.rejected.jsonl`), is logged and counted, and does not hold up the rows after it.
- Both files say who asked what, so they are the proxy user's alone: created 0600 whatever the
  umask, and narrowed to 0600 at startup if an earlier version left them wider.
- The writer also runs the retention job (proxy/audit/retention.py) beside it, for as long as
  it runs, when `PROXY_AUDIT_RETENTION_DAYS` is not 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
from pathlib import Path
from typing import Any, TextIO

from sqlalchemy import insert, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncEngine

from proxy.audit.record import AuditRecord
from proxy.audit.retention import prune_periodically
from proxy.core.metrics import ProxyMetrics
from proxy.core.models import AuditEntry
from proxy.core.settings import Settings

log = logging.getLogger("proxy.audit")

DB_WRITE_TIMEOUT_SECONDS = 10.0
REPLAY_CHUNK = 500
PRIVATE_FILE = 0o600
PRIVATE_DIRECTORY = 0o700


class AuditWriter:
    def __init__(self, engine: AsyncEngine, settings: Settings, metrics: ProxyMetrics) -> None:
        self._engine = engine
        self._settings = settings
        self._metrics = metrics
        self._spool = Path(settings.proxy_audit_spool_path)
        self._dead_letter = self._spool.with_name(self._spool.stem + ".rejected.jsonl")
        self._batch_size = settings.proxy_audit_batch_size
        self._flush_seconds = settings.proxy_audit_flush_seconds
        self._retry_seconds = settings.proxy_audit_retry_seconds
        self._queue: asyncio.Queue[AuditRecord] = asyncio.Queue()
        # Rows taken off the queue and not yet stored. Kept on the instance, not in a local, so
        # that cancelling the writer at shutdown cannot drop them; storing twice is harmless
        # because inserts ignore ids already present.
        self._pending: list[AuditRecord] = []
        self._task: asyncio.Task[None] | None = None
        self._retention: asyncio.Task[None] | None = None
        self._spooled = self._count_spooled()
        self._last_replay = 0.0
        self._closing = False
        metrics.audit_spooled_rows.set(self._spooled)

    def submit(self, record: AuditRecord) -> None:
        self._queue.put_nowait(record)
        self._metrics.audit_queue_depth.set(self._queue.qsize() + len(self._pending))

    async def start(self) -> None:
        for path in (self._spool, self._dead_letter):
            if path.exists():
                try:
                    path.chmod(PRIVATE_FILE)
                except OSError as exc:
                    raise RuntimeError(
                        f"cannot make {path} readable by this user only (0600): {exc}; give it "
                        f"to the proxy's user or point PROXY_AUDIT_SPOOL_PATH elsewhere") from exc
        self._task = asyncio.create_task(self._run(), name="audit-writer")
        if self._settings.proxy_audit_retention_days > 0:
            self._retention = asyncio.create_task(
                prune_periodically(self._engine, self._settings), name="audit-retention")

    async def close(self) -> None:
        self._closing = True
        if self._retention is not None:
            self._retention.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._retention
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        rows = self._pending + self._drain()
        self._pending = []
        if self._spooled:
            await self._replay()
        if rows:
            await self._store(rows)

    def _drain(self) -> list[AuditRecord]:
        rows: list[AuditRecord] = []
        while not self._queue.empty():
            rows.append(self._queue.get_nowait())
        self._metrics.audit_queue_depth.set(0)
        return rows

    async def _run(self) -> None:
        # Not `while True`: on Python 3.11 `asyncio.wait_for` swallows a cancellation that
        # arrives as a row does, so `close()` must be able to end this loop without one.
        while not self._closing:
            await self._fill_pending()
            try:
                if self._spooled and time.monotonic() - self._last_replay >= self._retry_seconds:
                    await self._replay()
                if self._pending:
                    await self._store(self._pending)
                    self._pending = []
            except Exception:  # the writer must outlive any single failure
                log.exception("audit writer failed; retrying")
                await asyncio.sleep(self._retry_seconds)

    async def _fill_pending(self) -> None:
        """Take up to one batch off the queue, waiting at most one flush interval."""
        timeout = self._flush_seconds if not self._spooled else min(
            self._flush_seconds, self._retry_seconds)
        if not self._pending:
            try:
                self._pending.append(await asyncio.wait_for(self._queue.get(), timeout))
            except TimeoutError:
                return
        deadline = time.monotonic() + self._flush_seconds
        while len(self._pending) < self._batch_size:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            try:
                self._pending.append(await asyncio.wait_for(self._queue.get(), remaining))
            except TimeoutError:
                break
        self._metrics.audit_queue_depth.set(self._queue.qsize() + len(self._pending))

    async def _store(self, batch: list[AuditRecord]) -> None:
        rows = [record.row() for record in batch]
        if self._spooled:
            # The database is (or was just) down: keep order by queueing behind the spool.
            await self._append_to_spool(rows)
            return
        try:
            await self._insert(rows)
            self._metrics.audit_queue_depth.set(self._queue.qsize())
        except Exception as exc:
            log.warning("audit database write failed (%s); spooling %d rows to %s",
                        type(exc).__name__, len(rows), self._spool)
            await self._append_to_spool(rows)

    async def _insert(self, rows: list[dict[str, Any]]) -> None:
        """Store rows; raise only if the database cannot be reached (the caller spools)."""
        try:
            await self._insert_batch(rows)
        except Exception as batch_error:
            if not await self._database_answers():
                raise
            log.warning("audit batch refused while the database answers (%s); storing row by "
                        "row", type(batch_error).__name__)
            for row in rows:
                try:
                    await self._insert_batch([row])
                except Exception as row_error:
                    if not await self._database_answers():
                        raise
                    await self._reject(row, row_error)

    async def _database_answers(self) -> bool:
        async def ping() -> None:
            async with self._engine.connect() as connection:
                await connection.execute(text("SELECT 1"))

        try:
            await asyncio.wait_for(ping(), DB_WRITE_TIMEOUT_SECONDS)
        except Exception:
            return False
        return True

    async def _reject(self, row: dict[str, Any], error: Exception) -> None:
        log.error("audit row %s refused by the database (%s: %s); kept in %s", row.get("id"),
                  type(error).__name__, str(error)[:200], self._dead_letter)
        line = json.dumps({**row, "rejected_because": str(error)[:500]}, default=str) + "\n"
        await asyncio.to_thread(self._append_sync, line, self._dead_letter)
        self._metrics.audit_rejected.inc()

    async def _insert_batch(self, rows: list[dict[str, Any]]) -> None:
        dialect = self._engine.dialect.name
        statement: Any
        if dialect == "postgresql":
            statement = postgresql.insert(AuditEntry).on_conflict_do_nothing(
                index_elements=["id"])
        elif dialect == "sqlite":
            statement = sqlite.insert(AuditEntry).on_conflict_do_nothing(index_elements=["id"])
        else:
            statement = insert(AuditEntry)

        async def run() -> None:
            async with self._engine.begin() as connection:
                await connection.execute(statement, rows)

        await asyncio.wait_for(run(), DB_WRITE_TIMEOUT_SECONDS)
        self._metrics.audit_written.inc(len(rows))

    async def _append_to_spool(self, rows: list[dict[str, Any]]) -> None:
        lines = "".join(json.dumps(row, default=str) + "\n" for row in rows)
        await asyncio.to_thread(self._append_sync, lines)
        self._spooled += len(rows)
        self._metrics.audit_spooled_rows.set(self._spooled)

    def _append_sync(self, lines: str, path: Path | None = None) -> None:
        target = path or self._spool
        target.parent.mkdir(mode=PRIVATE_DIRECTORY, parents=True, exist_ok=True)
        with _open_private(target, os.O_APPEND) as handle:
            handle.write(lines)
            handle.flush()
            os.fsync(handle.fileno())

    async def _replay(self) -> None:
        self._last_replay = time.monotonic()
        rows = await asyncio.to_thread(self._read_spool)
        try:
            for start in range(0, len(rows), REPLAY_CHUNK):
                chunk = [AuditRecord.from_row(r).row() for r in rows[start:start + REPLAY_CHUNK]]
                await self._insert(chunk)
        except Exception as exc:
            log.info("audit database still unavailable (%s); %d rows stay spooled",
                     type(exc).__name__, self._spooled)
            return
        await asyncio.to_thread(self._truncate_spool)
        log.info("replayed %d spooled audit rows into the database", len(rows))
        self._spooled = 0
        self._metrics.audit_spooled_rows.set(0)

    def _read_spool(self) -> list[dict[str, Any]]:
        if not self._spool.exists():
            return []
        rows = []
        with self._spool.open(encoding="utf-8") as handle:
            for line in handle:
                if line.strip():
                    try:
                        rows.append(json.loads(line))
                    except ValueError:
                        # A line cut short by a crash mid-write is the one row not acknowledged.
                        log.warning("skipping a truncated line in the audit spool")
        return rows

    def _truncate_spool(self) -> None:
        with _open_private(self._spool, os.O_TRUNC) as handle:
            handle.flush()
            os.fsync(handle.fileno())

    def _count_spooled(self) -> int:
        if not self._spool.exists():
            return 0
        with self._spool.open(encoding="utf-8") as handle:
            return sum(1 for line in handle if line.strip())


def _open_private(path: Path, mode_flag: int) -> TextIO:
    """Open for writing (append or truncate), creating the file 0600; an existing file is
    narrowed to 0600 too, so rows are never written into a file others can read."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | mode_flag, PRIVATE_FILE)
    try:
        os.fchmod(fd, PRIVATE_FILE)
    except BaseException:
        os.close(fd)
        raise
    return os.fdopen(fd, "w", encoding="utf-8")
