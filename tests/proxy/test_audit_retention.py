"""Audit retention, on SQLite and the real Postgres: rows older than
`PROXY_AUDIT_RETENTION_DAYS` are deleted once by `python -m proxy prune-audit`; 0 keeps every row.
(The running proxy's periodic prune is tested in process, in fast/test_audit_retention.py.)
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, insert, select
from sqlalchemy.ext.asyncio import create_async_engine

from proxy.core.models import AuditEntry
from proxy.core.settings import async_database_url
from tests.support.database import count_rows
from tests.support.timing import scaled

ROWS_FOR = 'SELECT count(*) FROM audit_log WHERE "user" = $1'


def add_rows(database_url: str, user: str, age: timedelta, count: int) -> None:
    """Insert `count` audit rows for `user`, `age` old, straight into the database."""
    at = datetime.now(UTC) - age

    async def run() -> None:
        engine = create_async_engine(async_database_url(database_url))
        try:
            async with engine.begin() as connection:
                await connection.execute(insert(AuditEntry), [
                    {"id": uuid.uuid4().hex, "at": at, "user": user, "endpoint": "/api/llm/chat",
                     "status": 200} for _ in range(count)])
        finally:
            await engine.dispose()

    asyncio.run(run())


def rows_older_than(database_url: str, days: int) -> int:
    cutoff = datetime.now(UTC) - timedelta(days=days)

    async def run() -> int:
        engine = create_async_engine(async_database_url(database_url))
        try:
            async with engine.connect() as connection:
                query = select(func.count()).select_from(AuditEntry).where(AuditEntry.at < cutoff)
                return int((await connection.execute(query)).scalar_one())
        finally:
            await engine.dispose()

    return asyncio.run(run())


def cli(args: list[str], cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items()
             if not k.startswith(("JWT_", "PROXY_", "OLLAMA_", "DATABASE_"))}
    return subprocess.run([sys.executable, "-m", "proxy", *args], cwd=cwd, env={**clean, **env},
                          capture_output=True, text=True, timeout=scaled(60))


def fresh(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def test_prune_audit_once_from_the_command_line(database_url: str, tmp_path: Path) -> None:
    assert cli(["migrate"], tmp_path, DATABASE_URL=database_url).returncode == 0
    old, kept = fresh("cli-old"), fresh("cli-kept")
    add_rows(database_url, old, timedelta(days=8), 3)
    add_rows(database_url, kept, timedelta(days=6), 2)
    # Other tests on this module's database may have left old rows of their own.
    expired = rows_older_than(database_url, 7)
    assert expired >= 3
    result = cli(["prune-audit"], tmp_path, DATABASE_URL=database_url,
                 PROXY_AUDIT_RETENTION_DAYS="7")
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"deleted {expired} audit rows older than 7 days" in result.stdout
    assert rows_older_than(database_url, 7) == 0
    assert count_rows(database_url, ROWS_FOR, old) == 0
    assert count_rows(database_url, ROWS_FOR, kept) == 2


@pytest.mark.parametrize("how", ["setting", "flag"])
def test_retention_zero_keeps_every_row(database_url: str, tmp_path: Path, how: str) -> None:
    assert cli(["migrate"], tmp_path, DATABASE_URL=database_url).returncode == 0
    ancient = fresh("ancient")
    add_rows(database_url, ancient, timedelta(days=3650), 2)
    if how == "setting":
        result = cli(["prune-audit"], tmp_path, DATABASE_URL=database_url,
                     PROXY_AUDIT_RETENTION_DAYS="0")
    else:
        result = cli(["prune-audit", "--days", "0"], tmp_path, DATABASE_URL=database_url,
                     PROXY_AUDIT_RETENTION_DAYS="7")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "PROXY_AUDIT_RETENTION_DAYS=0" in result.stdout
    assert count_rows(database_url, ROWS_FOR, ancient) == 2


@pytest.mark.parametrize("value", ["-1", "forever"])
def test_a_bad_retention_setting_is_named(tmp_path: Path, value: str) -> None:
    result = cli(["prune-audit"], tmp_path, PROXY_AUDIT_RETENTION_DAYS=value)
    assert result.returncode != 0
    assert "PROXY_AUDIT_RETENTION_DAYS: " in result.stderr
    assert "Traceback" not in result.stderr


def test_a_bad_days_flag_is_refused(tmp_path: Path) -> None:
    result = cli(["prune-audit", "--days", "-3"], tmp_path)
    assert result.returncode == 2
    assert "a whole number of days, 0 or more: '-3'" in result.stderr


def test_prune_audit_without_the_schema_says_what_to_run(tmp_path: Path) -> None:
    result = cli(["prune-audit"], tmp_path, DATABASE_URL=f"sqlite:///{tmp_path / 'empty.db'}",
                 PROXY_AUDIT_RETENTION_DAYS="7")
    assert result.returncode == 1
    assert "python -m proxy migrate" in result.stderr
    assert "Traceback" not in result.stderr
