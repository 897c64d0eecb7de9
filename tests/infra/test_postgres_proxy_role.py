"""infra/postgres/proxy-role.sh on the real Postgres: the proxy's least-privilege database role.

The script is what the Postgres container runs from /docker-entrypoint-initdb.d on its first
start (docker-compose.yml mounts it, Pulumi uploads it), and what an operator runs once on a
database created before it existed. Here it runs as the container would run it (bash, psql, the
POSTGRES_* variables), against a fresh database on the test Postgres, with a role name of its own
so that concurrent runs do not meet.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import pytest

from tests.infra.stack_files import REPO_ROOT
from tests.support.timing import scaled

pytestmark = pytest.mark.postgres

SCRIPT = REPO_ROOT / "infra" / "postgres" / "proxy-role.sh"
ADMIN_URL = os.environ.get("TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")


def query(url: str, sql: str, *args: object) -> list[Any]:
    async def run() -> list[Any]:
        conn = await asyncpg.connect(url)
        try:
            return list(await conn.fetch(sql, *args))
        finally:
            await conn.close()

    # A loop of its own, never installed as the thread's: asyncio.run() would leave none behind,
    # and Pulumi's mock runtime (the other tests here) needs the thread's loop.
    loop = asyncio.new_event_loop()
    try:
        return loop.run_until_complete(run())
    finally:
        loop.close()


@dataclass(frozen=True)
class Database:
    name: str
    role: str
    password: str

    @property
    def admin_url(self) -> str:
        return f"{ADMIN_URL.rsplit('/', 1)[0]}/{self.name}"

    @property
    def proxy_url(self) -> str:
        admin = urlsplit(ADMIN_URL)
        host = f"{admin.hostname}:{admin.port or 5432}"
        return f"postgresql://{self.role}:{self.password}@{host}/{self.name}"

    def run_script(self) -> subprocess.CompletedProcess[str]:
        """The script as the image's entrypoint runs it: POSTGRES_USER, POSTGRES_DB, psql."""
        admin = urlsplit(ADMIN_URL)
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "PGHOST": admin.hostname or "127.0.0.1",
            "PGPORT": str(admin.port or 5432),
            "POSTGRES_USER": admin.username or "postgres",
            "POSTGRES_DB": self.name,
            "PROXY_DB_ROLE": self.role,
            "PROXY_DB_PASSWORD": self.password,
        }
        if admin.password:
            env["PGPASSWORD"] = admin.password
        return subprocess.run(["bash", str(SCRIPT)], env=env, capture_output=True, text=True,
                              timeout=scaled(60), check=False)

    def migrate(self, url: str) -> subprocess.CompletedProcess[str]:
        """`python -m proxy migrate`, the proxy's own migration command, connecting as `url`."""
        env = {**os.environ, "DATABASE_URL": url, "PROXY_ENV": "dev"}
        return subprocess.run([sys.executable, "-m", "proxy", "migrate"], env=env, cwd=REPO_ROOT,
                              capture_output=True, text=True, timeout=scaled(120), check=False)

    def owners(self) -> dict[str, str]:
        rows = query(self.admin_url, """
            SELECT c.relname, pg_get_userbyid(c.relowner) AS owner FROM pg_class c
            JOIN pg_namespace n ON n.oid = c.relnamespace
            WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p', 'v', 'm', 'S')""")
        return {row["relname"]: row["owner"] for row in rows}


@pytest.fixture
def database() -> Iterator[Database]:
    suffix = uuid.uuid4().hex[:10]
    db = Database(f"proxy_role_test_{suffix}", f"llm_proxy_{suffix}", secrets.token_hex(24))
    query(ADMIN_URL, f'CREATE DATABASE "{db.name}"')
    try:
        yield db
    finally:
        query(ADMIN_URL, f'DROP DATABASE IF EXISTS "{db.name}" WITH (FORCE)')
        query(ADMIN_URL, f'DROP ROLE IF EXISTS "{db.role}"')


def test_the_role_owns_the_database_and_holds_no_cluster_privilege(database: Database) -> None:
    done = database.run_script()
    assert done.returncode == 0, done.stderr

    [role] = query(ADMIN_URL, "SELECT * FROM pg_roles WHERE rolname = $1", database.role)
    assert role["rolcanlogin"]
    for privilege in ("rolsuper", "rolcreaterole", "rolcreatedb", "rolreplication",
                      "rolbypassrls"):
        assert role[privilege] is False, f"{database.role} has {privilege}"
    [owner] = query(ADMIN_URL, "SELECT pg_get_userbyid(datdba) AS owner FROM pg_database "
                               "WHERE datname = $1", database.name)
    assert owner["owner"] == database.role


def test_migrations_run_as_the_role_and_it_owns_what_they_create(database: Database) -> None:
    assert database.run_script().returncode == 0

    done = database.migrate(database.proxy_url)

    assert done.returncode == 0, done.stdout + done.stderr
    owners = database.owners()
    assert "audit_log" in owners and "alembic_version" in owners
    assert set(owners.values()) == {database.role}
    [me] = query(database.proxy_url, "SELECT current_user AS name, usesuper FROM pg_user "
                                     "WHERE usename = current_user")
    assert (me["name"], me["usesuper"]) == (database.role, False)


def test_a_database_the_superuser_built_is_handed_over_and_the_script_can_run_again(
    database: Database,
) -> None:
    # A stack deployed before this role existed: the superuser ran the migrations.
    admin = urlsplit(ADMIN_URL)
    superuser_url = database.admin_url.replace(f"{admin.scheme}://", "postgresql://", 1)
    assert database.migrate(superuser_url).returncode == 0
    assert set(database.owners().values()) == {admin.username or "postgres"}

    for attempt in ("hand over", "again: idempotent"):
        done = database.run_script()
        assert done.returncode == 0, f"{attempt}: {done.stderr}"

    assert set(database.owners().values()) == {database.role}
    # The role can now use and change its schema: a migration run and a write.
    assert database.migrate(database.proxy_url).returncode == 0
    query(database.proxy_url, "INSERT INTO prompt_templates (name, template, created_by, "
                              "created_at, updated_at) VALUES ('t', 'x', 'ops', now(), now())")


def test_without_a_password_the_script_stops_and_names_the_variable(database: Database) -> None:
    done = Database(database.name, database.role, "").run_script()

    assert done.returncode != 0
    assert "PROXY_DB_PASSWORD" in done.stderr
    assert not query(ADMIN_URL, "SELECT 1 FROM pg_roles WHERE rolname = $1", database.role)
