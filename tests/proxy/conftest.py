"""Fixtures for the proxy's tests: real servers in separate processes, talking real HTTP, for
what needs a socket (streaming, disconnects, the HTTP server's limits, WebSockets, process kills,
the server's log). Everything else runs in process, in the fast tier (fast/conftest.py).

- `simulator`: the Ollama simulator (`python -m tests.support.simulator`), one per test module.
- `proxy_server`: the proxy (`python -m proxy serve`) in front of it, on SQLite by default.
- `database_url`: parametrised over SQLite and the real Postgres (`TEST_POSTGRES_URL`, default
  the local server on 127.0.0.1:5432); every Postgres test run gets a fresh database.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support.database import postgres_database
from tests.support.proxy_baseline import upstream_simulator
from tests.support.proxy_process import ProxyProcess, start_proxy, stop_proxy
from tests.support.simulator.process import SimulatorProcess

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def simulator() -> Iterator[SimulatorProcess]:
    with upstream_simulator() as sim:
        yield sim


@pytest.fixture
def sim(simulator: SimulatorProcess) -> SimulatorProcess:
    """The module's simulator, with faults, counters and settings reset for this test."""
    simulator.reset(config=True)
    return simulator


@pytest.fixture(scope="module",
                params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
                 ) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path_factory.mktemp('db') / 'proxy.db'}"
    else:
        yield from postgres_database()


@pytest.fixture(scope="module")
def proxy_factory(tmp_path_factory: pytest.TempPathFactory
                  ) -> Iterator[Callable[..., ProxyProcess]]:
    started: list[ProxyProcess] = []

    def factory(wait: bool = True, **env: str) -> ProxyProcess:
        proxy = start_proxy(tmp_path_factory.mktemp("proxy"), env, wait=wait)
        started.append(proxy)
        return proxy

    yield factory
    for proxy in started:
        stop_proxy(proxy)


@pytest.fixture(scope="module")
def proxy_server(simulator: SimulatorProcess, proxy_factory: Callable[..., ProxyProcess]
                 ) -> ProxyProcess:
    return proxy_factory(OLLAMA_URL=simulator.url)


@pytest.fixture(scope="module")
def postgres_url() -> Iterator[str]:
    """A fresh Postgres database for this module (for tests that only make sense on Postgres)."""
    yield from postgres_database()


