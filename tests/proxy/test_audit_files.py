"""The audit writer's local files (the spool, and the dead-letter file beside it) hold who asked
what: they are readable by the proxy's own user only (0600), whatever the umask, and a file left
with a wider mode by an earlier version is narrowed when the writer starts.

In process, against real databases: Postgres on a port nothing listens on (an outage, so rows
are spooled) and a real SQLite file whose trigger refuses some rows (so they are dead-lettered).
"""

from __future__ import annotations

import json
import os
import sqlite3
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from proxy.audit.record import AuditRecord
from proxy.audit.writer import AuditWriter
from proxy.core.db import create_engine, migrate
from proxy.core.metrics import ProxyMetrics
from proxy.core.settings import Settings
from tests.support.proxy_process import free_port
from tests.support.tokens import SECRET

PRIVATE = 0o600


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture(autouse=True)
def usual_umask() -> Iterator[None]:
    # The common default: files would be created 0644 unless the writer asks for less.
    previous = os.umask(0o022)
    yield
    os.umask(previous)


def settings_for(database_url: str, spool: Path) -> Settings:
    return Settings(_env_file=None, database_url=database_url, jwt_secret=SECRET,  # type: ignore[call-arg]
                    proxy_audit_spool_path=str(spool))


def unreachable_postgres() -> str:
    return f"postgresql://postgres@127.0.0.1:{free_port()}/nothing"


def record(user: str, prompt: str = "hello") -> AuditRecord:
    entry = AuditRecord(id=os.urandom(8).hex(), endpoint="/api/llm/generate", user=user)
    entry.set_prompt(prompt, keep_text=False)
    entry.status = 200
    return entry


async def test_the_spool_is_created_private(tmp_path: Path) -> None:
    spool = tmp_path / "audit" / "spool.jsonl"
    settings = settings_for(unreachable_postgres(), spool)
    writer = AuditWriter(create_engine(settings), settings, ProxyMetrics())
    for _ in range(3):
        writer.submit(record("spooled"))
    await writer.close()  # the database is down: the rows go to the spool
    assert len(spool.read_text().splitlines()) == 3
    assert oct(mode(spool)) == oct(PRIVATE)


async def test_an_existing_wider_spool_is_made_private(tmp_path: Path) -> None:
    spool = tmp_path / "spool.jsonl"
    spool.write_text(json.dumps(record("left-behind").row(), default=str) + "\n")
    spool.chmod(0o644)
    dead_letter = tmp_path / "spool.rejected.jsonl"
    dead_letter.write_text("{}\n")
    dead_letter.chmod(0o664)
    settings = settings_for(unreachable_postgres(), spool)
    writer = AuditWriter(create_engine(settings), settings, ProxyMetrics())
    await writer.start()
    try:
        assert oct(mode(spool)) == oct(PRIVATE)
        assert oct(mode(dead_letter)) == oct(PRIVATE)
    finally:
        await writer.close()
    assert len(spool.read_text().splitlines()) == 1
    assert oct(mode(spool)) == oct(PRIVATE)


async def test_the_dead_letter_file_is_created_private(tmp_path: Path) -> None:
    database = tmp_path / "audit.db"
    settings = settings_for(f"sqlite+aiosqlite:///{database}", tmp_path / "spool.jsonl")
    engine = create_engine(settings)
    await migrate(engine)
    with sqlite3.connect(database) as conn:
        conn.execute("CREATE TRIGGER refuse_13 BEFORE INSERT ON audit_log "
                     "WHEN NEW.prompt_chars = 13 BEGIN SELECT RAISE(ABORT, 'refused'); END")
    writer = AuditWriter(engine, settings, ProxyMetrics())
    writer.submit(record("dead", prompt="thirteen char"))
    writer.submit(record("alive"))
    await writer.close()
    dead_letter = tmp_path / "spool.rejected.jsonl"
    assert len(dead_letter.read_text().splitlines()) == 1
    assert oct(mode(dead_letter)) == oct(PRIVATE)
    await engine.dispose()
