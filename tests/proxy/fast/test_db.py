"""Which database failures mean "out of reach" (DatabaseUnavailable: 503 on a route, the spool
for audit rows) and which are the database refusing what it was asked (left as they are). The
outages themselves, against the real Postgres, are in tests/proxy/test_database_outage.py."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from asyncpg import exceptions as errors
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


# (case, the error, whether it is raised by asyncpg (and so handed on translated), unreachable)
CASES = [
    ("connection refused", ConnectionRefusedError(111, "refused"), False, True),
    ("connection reset", ConnectionResetError(104, "reset"), False, True),
    ("no answer in time", TimeoutError(), False, True),
    ("server starting up", errors.CannotConnectNowError("starting up"), True, True),
    ("server shutting down", errors.AdminShutdownError("terminating"), True, True),
    ("connection lost", errors.ConnectionFailureError("connection failure"), True, True),
    ("wrong password", errors.InvalidPasswordError("authentication failed"), True, False),
    ("duplicate key", errors.UniqueViolationError("duplicate key"), True, False),
    ("missing table", errors.UndefinedTableError("no audit_log"), True, False),
    ("a bug of ours", ValueError("bad value"), False, False),
]


@pytest.mark.parametrize(("error", "from_driver", "unreachable"),
                         [pytest.param(*case[1:], id=case[0]) for case in CASES])
def test_out_of_reach_is_told_from_refused(dialect: Dialect, error: Exception,
                                           from_driver: bool, unreachable: bool) -> None:
    raised = driver_error(dialect, error) if from_driver else error
    assert is_unreachable(dialect, raised) is unreachable
