"""The audit writer: batches rows off the request path; nothing accepted is lost.

- Requests only `submit()` (a queue put); one background task writes batches of up to
  `PROXY_AUDIT_BATCH_SIZE` rows, at least every `PROXY_AUDIT_FLUSH_SECONDS`.
- A row is stored in the database, or appended to a local spool file (JSON lines, fsynced),
  within `PROXY_AUDIT_SPOOL_AFTER_SECONDS` of its request finishing, whatever the database does.
  A database that refuses connections is spooled at once; one that stops answering is given
  three quarters of that deadline (every connect, statement and ping is bounded by what is left
  of it), then the rows go to the spool. A hard kill therefore loses at most the rows of the
  requests that finished within the last `PROXY_AUDIT_SPOOL_AFTER_SECONDS`.
- Once rows are spooled, later batches follow them there, so order is kept. Every
  `PROXY_AUDIT_RETRY_SECONDS` the spool is replayed into the database, a chunk at a time and
  within the same deadline (for the rows queued meanwhile); the chunks stored are remembered, so
  a long spool is worked through across attempts, and the file is emptied only after every row
  in it is stored. Inserts ignore ids already present, so a row stored twice (a replay
  interrupted halfway, a kill before the spool was emptied) is stored once.
- A spool left behind by an earlier process is replayed at startup. A proxy started while the
  database is down holds rows in the spool (`start(database_ready=False)`) until the schema is
  migrated (`database_ready()`), and never writes into a database without its tables.
- A process killed mid-append leaves a last line without its end: the next append starts on a
  fresh line, and a line that does not parse as a row goes to the dead-letter file (below) whole,
  so it neither swallows the row after it nor disappears.
- `close()` (graceful shutdown) drains the queue to the database or, failing that, to the spool.
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
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from sqlalchemy import insert, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncEngine

from proxy.audit.record import AuditRecord
from proxy.audit.retention import prune_periodically
from proxy.core.errors import DatabaseUnavailable
from proxy.core.metrics import ProxyMetrics
from proxy.core.models import AuditEntry
from proxy.core.settings import Settings

log = logging.getLogger("proxy.audit")

REPLAY_CHUNK = 500
PRIVATE_FILE = 0o600
PRIVATE_DIRECTORY = 0o700
# Of PROXY_AUDIT_SPOOL_AFTER_SECONDS, the part a batch may spend being gathered, and the point by
# which the database must have stored it; the last quarter is kept for writing the spool.
GATHER_SHARE = 0.25
DATABASE_SHARE = 0.75


@dataclass
class SpoolLine:
    """One line of the spool: the row it holds (None if it does not parse as one), its text,
    and the file offset just past it."""

    row: dict[str, Any] | None
    raw: str
    end: int


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
        self._spool_after = settings.proxy_audit_spool_after_seconds
        # Rows with the monotonic time their request finished: the deadlines count from it.
        self._queue: asyncio.Queue[tuple[float, AuditRecord]] = asyncio.Queue()
        # Rows taken off the queue and not yet stored. Kept on the instance, not in a local, so
        # that cancelling the writer at shutdown cannot drop them; storing twice is harmless
        # because inserts ignore ids already present.
        self._pending: list[tuple[float, AuditRecord]] = []
        self._task: asyncio.Task[None] | None = None
        self._retention: asyncio.Task[None] | None = None
        # The spool's rows not yet stored, and how far into the file every row is stored.
        self._spooled = self._count_spooled()
        self._replayed_to = 0
        self._last_replay = 0.0
        self._database_ready = True
        self._closing = False
        # The spool is written by worker threads; one at a time, a cancelled await included.
        self._file_lock = threading.Lock()
        metrics.audit_spooled_rows.set(self._spooled)

    def submit(self, record: AuditRecord) -> None:
        self._queue.put_nowait((time.monotonic(), record))
        self._metrics.audit_queue_depth.set(self._queue.qsize() + len(self._pending))

    async def start(self, database_ready: bool = True) -> None:
        """Start writing; with `database_ready=False` every row goes to the spool until
        `database_ready()` says the schema is there."""
        for path in (self._spool, self._dead_letter):
            if path.exists():
                try:
                    path.chmod(PRIVATE_FILE)
                except OSError as exc:
                    raise RuntimeError(
                        f"cannot make {path} readable by this user only (0600): {exc}; give it "
                        f"to the proxy's user or point PROXY_AUDIT_SPOOL_PATH elsewhere") from exc
        self._database_ready = database_ready
        self._task = asyncio.create_task(self._run(), name="audit-writer")
        if self._settings.proxy_audit_retention_days > 0:
            self._retention = asyncio.create_task(
                prune_periodically(self._engine, self._settings), name="audit-retention")

    def database_ready(self) -> None:
        """The schema is migrated: replay the spool now and store into the database again."""
        self._database_ready = True
        self._last_replay = 0.0

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
        batch = self._pending + self._drain()
        self._pending = []
        if self._spooled and self._database_ready:
            await self._replay()
        if batch:
            await self._store(batch)

    def _drain(self) -> list[tuple[float, AuditRecord]]:
        rows: list[tuple[float, AuditRecord]] = []
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
                if (self._spooled and self._database_ready
                        and time.monotonic() - self._last_replay >= self._retry_seconds):
                    await self._replay()
                if self._pending:
                    await self._store(self._pending)
                    self._pending = []
            except Exception:  # the writer must outlive any single failure (a full disk)
                log.exception("audit writer failed; retrying")
                await asyncio.sleep(min(self._retry_seconds, self._spool_after * GATHER_SHARE))

    async def _fill_pending(self) -> None:
        """Take up to one batch off the queue, waiting at most one flush interval, and never
        past the oldest row's share of its deadline."""
        timeout = self._flush_seconds if not self._spooled else min(
            self._flush_seconds, self._retry_seconds)
        if not self._pending:
            try:
                self._pending.append(await asyncio.wait_for(self._queue.get(), timeout))
            except TimeoutError:
                return
        until = min(time.monotonic() + self._flush_seconds,
                    self._pending[0][0] + self._spool_after * GATHER_SHARE)
        while len(self._pending) < self._batch_size:
            remaining = until - time.monotonic()
            if remaining <= 0:
                break
            try:
                self._pending.append(await asyncio.wait_for(self._queue.get(), remaining))
            except TimeoutError:
                break
        self._metrics.audit_queue_depth.set(self._queue.qsize() + len(self._pending))

    def _database_deadline(self) -> float:
        """When the database must be done with whatever the writer asks it now: the oldest
        row waiting (pending, else one arriving now) must still reach the spool in time."""
        since = self._pending[0][0] if self._pending else time.monotonic()
        return since + self._spool_after * DATABASE_SHARE

    async def _store(self, batch: list[tuple[float, AuditRecord]]) -> None:
        rows = [record.row() for _, record in batch]
        if self._spooled or not self._database_ready:
            # The database is (or was just) down: keep order by queueing behind the spool.
            await self._append_to_spool(rows)
            return
        unstored = await self._insert(rows, batch[0][0] + self._spool_after * DATABASE_SHARE)
        self._metrics.audit_queue_depth.set(self._queue.qsize())
        if unstored:
            log.warning("audit database unavailable; spooling %d rows to %s", len(unstored),
                        self._spool)
            await self._append_to_spool(unstored)

    async def _insert(self, rows: list[dict[str, Any]], deadline: float
                      ) -> list[dict[str, Any]]:
        """Store rows by `deadline`; return those the database could not take in time (it is
        unreachable or too slow), for the caller to spool. Rows it refuses while answering go
        to the dead-letter file."""
        try:
            await self._insert_batch(rows, deadline)
            return []
        except Exception as batch_error:
            if not await self._refused_while_answering(batch_error, deadline):
                return rows
            log.warning("audit batch refused while the database answers (%s); storing row by "
                        "row", type(batch_error).__name__)
        for index, row in enumerate(rows):
            try:
                await self._insert_batch([row], deadline)
            except Exception as row_error:
                if not await self._refused_while_answering(row_error, deadline):
                    return rows[index:]
                await self._reject(row, row_error)
        return []

    async def _refused_while_answering(self, error: Exception, deadline: float) -> bool:
        """Whether `error` is the database refusing what it was given, not being out of reach."""
        if isinstance(error, DatabaseUnavailable | TimeoutError):
            return False

        async def ping() -> None:
            async with self._engine.connect() as connection:
                await connection.execute(text("SELECT 1"))

        try:
            timeout = _time_left(deadline)
            await asyncio.wait_for(ping(), timeout)
        except Exception:
            return False
        return True

    async def _reject(self, row: dict[str, Any], error: Exception) -> None:
        log.error("audit row %s refused by the database (%s: %s); kept in %s", row.get("id"),
                  type(error).__name__, str(error)[:200], self._dead_letter)
        await self._set_aside({**row, "rejected_because": str(error)[:500]})

    async def _set_aside(self, entry: dict[str, Any]) -> None:
        line = json.dumps(entry, default=str) + "\n"
        await asyncio.to_thread(self._append_sync, line, self._dead_letter)
        self._metrics.audit_rejected.inc()

    async def _insert_batch(self, rows: list[dict[str, Any]], deadline: float) -> None:
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

        timeout = _time_left(deadline)
        await asyncio.wait_for(run(), timeout)
        self._metrics.audit_written.inc(len(rows))

    async def _append_to_spool(self, rows: list[dict[str, Any]]) -> None:
        lines = "".join(json.dumps(row, default=str) + "\n" for row in rows)
        await asyncio.to_thread(self._append_sync, lines)
        self._spooled += len(rows)
        self._metrics.audit_spooled_rows.set(self._spooled)

    def _append_sync(self, lines: str, path: Path | None = None) -> None:
        target = path or self._spool
        with self._file_lock:
            target.parent.mkdir(mode=PRIVATE_DIRECTORY, parents=True, exist_ok=True)
            with _open_private(target, os.O_APPEND) as handle:
                fd = handle.fileno()
                size = os.fstat(fd).st_size
                if size and os.pread(fd, 1, size - 1) != b"\n":
                    # A crash cut the last line short: never glue a row onto it.
                    lines = "\n" + lines
                handle.write(lines)
                handle.flush()
                os.fsync(fd)

    async def _replay(self) -> None:
        self._last_replay = time.monotonic()
        deadline = self._database_deadline()
        replayed = 0
        while chunk := await asyncio.to_thread(self._read_spool, self._replayed_to,
                                               REPLAY_CHUNK):
            rows = [line.row for line in chunk if line.row is not None]
            if rows and await self._insert(rows, deadline):
                log.info("audit database still unavailable; %d rows stay spooled",
                         self._spooled)
                return
            for line in chunk:
                if line.row is None:
                    log.error("an audit spool line does not parse as a row (cut short by a "
                              "crash mid-write?); kept in %s", self._dead_letter)
                    await self._set_aside({"spool_line": line.raw, "rejected_because":
                                           "not a whole audit row"})
            self._replayed_to = chunk[-1].end
            replayed += len(chunk)
            self._spooled = max(0, self._spooled - len(chunk))
            self._metrics.audit_spooled_rows.set(self._spooled)
        await asyncio.to_thread(self._truncate_spool)
        log.info("replayed %d spooled audit rows into the database", replayed)
        self._replayed_to = 0
        self._spooled = 0
        self._metrics.audit_spooled_rows.set(0)

    def _read_spool(self, offset: int, limit: int) -> list[SpoolLine]:
        """Up to `limit` lines of the spool from byte `offset` on (blank lines skipped)."""
        lines: list[SpoolLine] = []
        with self._file_lock:
            if not self._spool.exists():
                return lines
            with self._spool.open("rb") as handle:
                handle.seek(offset)
                while len(lines) < limit and (raw := handle.readline()):
                    text_line = raw.decode("utf-8", "replace").strip()
                    if text_line:
                        lines.append(SpoolLine(_parse_row(text_line), text_line, handle.tell()))
        return lines

    def _truncate_spool(self) -> None:
        with self._file_lock, _open_private(self._spool, os.O_TRUNC) as handle:
            handle.flush()
            os.fsync(handle.fileno())

    def _count_spooled(self) -> int:
        if not self._spool.exists():
            return 0
        with self._spool.open("rb") as handle:
            return sum(1 for line in handle if line.strip())


def _parse_row(line: str) -> dict[str, Any] | None:
    """The row a spool line holds, as the database takes it; None if it is not one."""
    try:
        data = json.loads(line)
        return AuditRecord.from_row(data).row() if isinstance(data, dict) else None
    except (ValueError, TypeError):
        return None


def _time_left(deadline: float) -> float:
    """Seconds until `deadline`; TimeoutError at once if it has passed."""
    left = deadline - time.monotonic()
    if left <= 0:
        raise TimeoutError("the audit row's deadline for the database has passed")
    return left


def _open_private(path: Path, mode_flag: int) -> TextIO:
    """Open for writing (append or truncate), creating the file 0600; an existing file is
    narrowed to 0600 too, so rows are never written into a file others can read. Readable as
    well, so that an append can look at the byte before it."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | mode_flag, PRIVATE_FILE)
    try:
        os.fchmod(fd, PRIVATE_FILE)
    except BaseException:
        os.close(fd)
        raise
    return os.fdopen(fd, "w", encoding="utf-8")
