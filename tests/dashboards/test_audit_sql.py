"""The users dashboard's SQL, run for real: on Postgres, as the read-only role that
grafana/audit-reader.sql creates, over audit rows written through the proxy's own model.

The queries are taken from the committed dashboard JSON (what Grafana will run), with Grafana's
macros and `${var:sqlstring}` variables expanded the way Grafana expands them. The per-user
table must equal the admin API's report (proxy/services/usage.py) for the same rows and prices.
"""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import uuid
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import asyncpg
import pytest
from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine

from proxy.core.models import AuditEntry, Base, Conversation, Message
from proxy.core.settings import Settings
from proxy.services.usage import usage
from tests.dashboards.paths import DASHBOARD_FILES, GRAFANA
from tests.support.database import admin_execute, postgres_database
from tests.support.timing import scaled

pytestmark = pytest.mark.postgres

START = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)
END = START + timedelta(hours=6)
PRICES = {"cost_gpu_hour": "1.8", "cost_hardware_month": "500", "top_n": "10"}
READER_PASSWORD = "reader-password-it's-quoted"
T = TypeVar("T")


def run(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run on a loop of its own: unlike asyncio.run, this leaves the thread's current event
    loop as it found it (Pulumi's mocks in tests/infra read it later in the same session)."""
    loop = asyncio.new_event_loop()
    try:
        return loop.run_until_complete(coroutine)
    finally:
        loop.close()


@dataclass
class AuditDatabase:
    url: str
    reader: str


def _entry(n: int, user: str | None, *, status: int = 200, minutes: int = 30,
           cached: bool = False, model: str | None = "llama3.2") -> AuditEntry:
    return AuditEntry(
        id=f"req-{n}", at=START + timedelta(minutes=minutes), user=user, role="user",
        client="203.0.113.7", endpoint="/api/llm/generate", model=model, prompt_chars=10,
        prompt_sha256="0" * 64, prompt_text="secret prompt", prompt_tokens=10 + n,
        completion_tokens=0 if status >= 400 else 100 + n, ttft_ms=200.0,
        duration_ms=1000.0 + 250 * n, upstream_ms=0.0 if cached else 900.0 + 100 * n,
        status=status, cached=cached,
    )


ROWS = [
    *(_entry(n, "alice", minutes=10 * n) for n in range(1, 8)),
    _entry(8, "alice", status=503, minutes=95),
    _entry(9, "alice", status=429, minutes=96),
    _entry(10, "alice", cached=True, minutes=97),
    _entry(11, "bob", minutes=130, model="mistral"),
    _entry(12, "bob", status=422, minutes=131, model="mistral"),
    _entry(13, None, status=401, minutes=140, model=None),
    _entry(14, "carol", minutes=-60),  # before the range: must not be counted
]


def _psql(url: str, reader: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["psql", url, "-X", "-q", "-v", "ON_ERROR_STOP=1", "-v", f"reader={reader}",
         "-v", f"reader_password={READER_PASSWORD}", "-f", str(GRAFANA / "audit-reader.sql")],
        capture_output=True, text=True, timeout=scaled(60), check=False,
    )


async def _seed(url: str) -> None:
    engine = create_async_engine(url.replace("postgresql://", "postgresql+asyncpg://", 1))
    try:
        async with engine.begin() as conn:
            await conn.run_sync(Base.metadata.create_all)
        async with async_sessionmaker(engine)() as session:
            session.add_all(ROWS)
            session.add(Conversation(id="c1", owner="alice", model="llama3.2", title="private"))
            session.add(Message(conversation_id="c1", role="user", content="private chat"))
            await session.commit()
    finally:
        await engine.dispose()


@pytest.fixture(scope="module")
def audit_db() -> Iterator[AuditDatabase]:
    reader = f"grafana_reader_{uuid.uuid4().hex[:10]}"
    try:
        for url in postgres_database("dashboards_test"):
            run(_seed(url))
            for attempt in ("create", "again: idempotent"):
                done = _psql(url, reader)
                assert done.returncode == 0, f"audit-reader.sql ({attempt}): {done.stderr}"
            yield AuditDatabase(url, reader)
    finally:
        admin_execute(f'DROP ROLE IF EXISTS "{reader}"')


def grafana_expand(sql: str, variables: dict[str, str] = PRICES) -> str:
    """Grafana's Postgres macros and variable formats, for a fixed range and a 1h interval."""
    sql = re.sub(r"\$__timeFilter\((\w+)\)",
                 lambda m: f"{m[1]} BETWEEN '{START.isoformat()}' AND '{END.isoformat()}'", sql)
    sql = re.sub(r"\$__timeGroupAlias\((\w+),\s*\$__interval\)",
                 lambda m: f'floor(extract(epoch from {m[1]})/3600)*3600 AS "time"', sql)
    sql = re.sub(r"\$\{(\w+):sqlstring\}",
                 lambda m: "'" + variables[m[1]].replace("'", "''") + "'", sql)
    assert "$" not in sql, f"unexpanded Grafana syntax in:\n{sql}"
    return sql


def panel_sql() -> dict[str, str]:
    return {
        p["title"]: t["rawSql"]
        for path in DASHBOARD_FILES
        for p in json.loads(path.read_text())["panels"]
        for t in p["targets"] if "rawSql" in t
    }


async def _as_reader(db: AuditDatabase, sql: str) -> list[dict[str, Any]]:
    conn = await asyncpg.connect(db.url, user=db.reader, password=READER_PASSWORD)
    try:
        return [dict(r) for r in await conn.fetch(sql)]
    finally:
        await conn.close()


def reader(db: AuditDatabase, sql: str) -> list[dict[str, Any]]:
    return run(_as_reader(db, sql))


@pytest.mark.parametrize("title", sorted(panel_sql()))
def test_every_panel_query_runs_as_the_reader(audit_db: AuditDatabase, title: str) -> None:
    rows = reader(audit_db, grafana_expand(panel_sql()[title]))
    assert rows, f"{title} returned nothing over seeded rows"


def test_the_users_table_equals_the_admin_usage_report(audit_db: AuditDatabase) -> None:
    rows = {r["user"]: r for r in reader(audit_db, grafana_expand(panel_sql()["Users"]))}
    settings = Settings(proxy_cost_gpu_hour=float(PRICES["cost_gpu_hour"]),
                        proxy_cost_hardware_month=float(PRICES["cost_hardware_month"]))

    async def report() -> list[dict[str, Any]]:
        engine = create_async_engine(
            audit_db.url.replace("postgresql://", "postgresql+asyncpg://", 1))
        try:
            # The admin API's end is exclusive, Grafana's BETWEEN inclusive: no row sits on it.
            return await usage(async_sessionmaker(engine), settings, ["user"], START, END,
                               None, None)
        finally:
            await engine.dispose()

    expected = {r["user"]: r for r in run(report())}
    assert set(rows) == set(expected) == {"alice", "bob", "-"}
    for user, api in expected.items():
        row = rows[user]
        for key in ("requests", "errors", "rate_limited", "cached", "prompt_tokens",
                    "completion_tokens"):
            assert row[key] == api[key], f"{user}.{key}: SQL {row[key]} != API {api[key]}"
        api_p95 = api["p95_latency_ms"]
        assert (row["p95_latency_s"] is None if api_p95 is None
                else float(row["p95_latency_s"]) * 1000 == pytest.approx(api_p95)), user
        assert float(row["cost"]) == pytest.approx(api["cost"], abs=1e-6), user
    assert rows["alice"]["cost"] > 0 and rows["alice"]["errors"] == 1


def test_top_lists_follow_the_top_n_variable(audit_db: AuditDatabase) -> None:
    sql = panel_sql()["Top users by tokens"]
    one = reader(audit_db, grafana_expand(sql, {**PRICES, "top_n": "1"}))
    assert [r["user"] for r in one] == ["alice"]


def test_a_variable_cannot_inject_sql(audit_db: AuditDatabase) -> None:
    sql = grafana_expand(panel_sql()["Top users by cost"],
                         {**PRICES, "cost_gpu_hour": "1) AS cost FROM audit_log; --"})
    with pytest.raises(asyncpg.InvalidTextRepresentationError):
        reader(audit_db, sql)


@pytest.mark.parametrize(
    ("sql", "error"),
    [
        ("SELECT prompt_text FROM audit_log", asyncpg.InsufficientPrivilegeError),
        ("SELECT client FROM audit_log", asyncpg.InsufficientPrivilegeError),
        ("SELECT * FROM audit_log", asyncpg.InsufficientPrivilegeError),
        ("SELECT content FROM messages", asyncpg.InsufficientPrivilegeError),
        ("SELECT title FROM conversations", asyncpg.InsufficientPrivilegeError),
        ("DELETE FROM audit_log", asyncpg.PostgresError),
        ("UPDATE audit_log SET status = 200", asyncpg.PostgresError),
        ("CREATE TABLE grafana_was_here (x int)", asyncpg.PostgresError),
    ],
)
def test_the_reader_sees_nothing_else_and_writes_nothing(
    audit_db: AuditDatabase, sql: str, error: type[Exception]
) -> None:
    with pytest.raises(error):
        reader(audit_db, sql)


def test_the_reader_sessions_are_read_only(audit_db: AuditDatabase) -> None:
    (row,) = reader(audit_db, "SHOW default_transaction_read_only")
    assert row["default_transaction_read_only"] == "on"
    (count,) = reader(audit_db, "SELECT count(*) AS n FROM audit_log")
    assert count["n"] == len(ROWS), "the failed writes above changed the table"
