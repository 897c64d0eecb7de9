"""Which database failures mean "out of reach" (DatabaseUnavailable: 503 on a route, the spool
for audit rows) and which are the database refusing what it was asked (left as they are). The
outages themselves, against the real Postgres, are in tests/proxy/test_database_outage.py."""

from __future__ import annotations

from collections.abc import Iterator

import asyncpg
import pytest
from sqlalchemy.engine import Dialect

from proxy.core.db import create_engine, is_unreachable
from tests.support.proxy_app import proxy_settings


@pytest.fixture(scope="module")
def dialect(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dialect]:
    settings = proxy_settings(tmp_path_factory.mktemp("db"),
                              database_url="postgresql://postgres@127.0.0.1:1/none")
    engine = create_engine(settings)  # connects only when used: never, here
    yield engine.sync_engine.dialect


def driver_error(dialect: Dialect, error: Exception) -> Exception:
    """`error` as SQLAlchemy's asyncpg adapter hands it on."""
    translated: Exception = dialect.loaded_dbapi.Error(str(error), error)
    return translated


CASES = [
    ("connection refused", lambda d: ConnectionRefusedError(111, "refused"), True),
    ("connection reset", lambda d: ConnectionResetError(104, "reset"), True),
    ("no answer in time", lambda d: TimeoutError(), True),
    ("server starting up", lambda d: driver_error(
        d, asyncpg.exceptions.CannotConnectNowError("the database system is starting up")), True),
    ("server shutting down", lambda d: driver_error(
        d, asyncpg.exceptions.AdminShutdownError("terminating connection")), True),
    ("connection lost", lambda d: driver_error(
        d, asyncpg.exceptions.ConnectionFailureError("connection failure")), True),
    ("wrong password", lambda d: driver_error(
        d, asyncpg.exceptions.InvalidPasswordError("password authentication failed")), False),
    ("duplicate key", lambda d: driver_error(
        d, asyncpg.exceptions.UniqueViolationError("duplicate key")), False),
    ("missing table", lambda d: driver_error(
        d, asyncpg.exceptions.UndefinedTableError('relation "audit_log" does not exist')), False),
    ("a bug of ours", lambda d: ValueError("bad value"), False),
]


@pytest.mark.parametrize(("error", "unreachable"),
                         [pytest.param(make, expected, id=name) for name, make, expected in CASES])
def test_out_of_reach_is_told_from_refused(dialect: Dialect, error, unreachable: bool) -> None:
    assert is_unreachable(dialect, error(dialect)) is unreachable
