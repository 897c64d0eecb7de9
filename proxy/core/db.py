"""The async engine, sessions, and applying migrations at startup.

A database that is down must cost a caller seconds, not minutes, and say so plainly. So every
connection attempt and (on PostgreSQL) every statement is bounded by
`PROXY_DATABASE_TIMEOUT_SECONDS`, and the engine itself turns a connection failure (refused,
reset, timed out, dropped mid-statement) into `DatabaseUnavailable`, which routes answer as 503
with Retry-After and the audit writer answers by spooling. Errors of a database that answers
(a constraint, a bad statement) are left as they are. Migrations get an engine of their own with
no statement bound: an upgrade of a large table may rightly take long.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, event, text
from sqlalchemy.engine import Dialect, ExceptionContext
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.pool import ConnectionPoolEntry

from proxy.core.errors import DatabaseUnavailable
from proxy.core.settings import Settings
from proxy.core.tracing import trace_database

log = logging.getLogger("proxy.db")

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"
# SQLSTATE classes of a server out of reach: 08 connection exceptions, 57P operator
# intervention (shutting down, restarting, not yet accepting connections).
UNREACHABLE_SQLSTATES = ("08", "57P")


def create_engine(settings: Settings, *, for_migrations: bool = False) -> AsyncEngine:
    if settings.is_sqlite:
        engine = create_async_engine(settings.database_url, connect_args={"timeout": 30})

        @event.listens_for(engine.sync_engine, "connect")
        def _sqlite_pragmas(dbapi_connection, _record):  # type: ignore[no-untyped-def]
            # Foreign keys are off by default in SQLite; WAL lets readers run during a write.
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.close()

    else:
        bound = settings.proxy_database_timeout_seconds
        # asyncpg's own timeouts, so that a silent server fails the call rather than hanging it;
        # a statement that times out leaves its connection unusable, so it is discarded.
        connect_args: dict[str, Any] = {"timeout": bound}
        if not for_migrations:
            connect_args["command_timeout"] = bound
        engine = create_async_engine(settings.database_url, pool_pre_ping=True, pool_size=10,
                                     pool_timeout=bound, connect_args=connect_args)
    _report_outages(engine)
    trace_database(engine, settings.proxy_otel_enabled)
    return engine


def _report_outages(engine: AsyncEngine) -> None:
    dialect = engine.sync_engine.dialect
    ping = dialect.do_ping

    def _ping(dbapi_connection: Any) -> bool:
        # The pool's pre-ping only treats the driver's own errors as a dead connection; a ping
        # that times out (a silent server) would escape it as a bare TimeoutError. Dead it is:
        # the pool discards it and connects anew, through `_connect`.
        try:
            return ping(dbapi_connection)
        except OSError:
            return False

    dialect.do_ping = _ping  # type: ignore[method-assign]

    @event.listens_for(engine.sync_engine, "do_connect")
    def _connect(dialect: Dialect, _record: ConnectionPoolEntry, cargs: tuple[Any, ...],
                 cparams: dict[str, Any]) -> Any:
        try:
            return dialect.connect(*cargs, **cparams)
        except Exception as exc:
            if is_unreachable(dialect, exc):
                log.info("cannot connect to the database: %s", type(exc).__name__)
                raise DatabaseUnavailable() from exc
            raise

    @event.listens_for(engine.sync_engine, "handle_error")
    def _during_a_statement(context: ExceptionContext) -> BaseException | None:
        error = context.original_exception
        # A failed pre-ping is the pool's own business: it reconnects, through `_connect`.
        if context.is_pre_ping or not isinstance(error, Exception):
            return None
        if context.is_disconnect or is_unreachable(context.dialect, error):
            context.is_disconnect = True  # never hand this connection out again
            return DatabaseUnavailable()
        return None


def is_unreachable(dialect: Dialect, error: Exception) -> bool:
    """Whether `error` means the server is out of reach (down, silent, starting or shutting
    down), as opposed to refusing what was asked (a wrong password, a missing table)."""
    if isinstance(error, OSError):  # refused, reset, unroutable, timed out
        return True
    if not isinstance(error, dialect.loaded_dbapi.Error):
        return False
    sqlstate = str(getattr(error, "sqlstate", None) or "")
    return sqlstate.startswith(UNREACHABLE_SQLSTATES) or dialect.is_disconnect(error, None, None)


def alembic_config(database_url: str | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    if database_url:
        config.set_main_option("sqlalchemy.url", database_url)
    return config


def _upgrade(connection: Connection) -> None:
    config = alembic_config()
    config.attributes["connection"] = connection
    command.upgrade(config, "head")


async def migrate(engine: AsyncEngine) -> None:
    """Bring the schema to the latest revision on `engine`."""
    async with engine.begin() as connection:
        await connection.run_sync(_upgrade)


async def migrate_database(settings: Settings) -> None:
    """Bring the schema to the latest revision, on an engine of its own (see the module's
    docstring); DatabaseUnavailable if the database cannot be reached."""
    engine = create_engine(settings, for_migrations=True)
    try:
        await migrate(engine)
    finally:
        await engine.dispose()


async def database_ok(engine: AsyncEngine) -> None:
    """Raise if the database cannot answer a trivial query."""
    async with engine.connect() as connection:
        await connection.execute(text("SELECT 1"))


def session_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False)
