"""The fast tier: the proxy app in the test's own process (tests/support/proxy_app.py), in front
of one Ollama simulator process for the whole session. Every test in this folder is marked
`fast` (`pytest -m fast`, `scripts/test --fast`).

- `simulator`: the session's simulator; `sim` (from tests/proxy/conftest.py) resets it per test.
- `make_proxy(**settings)`: an app on the test baseline (and FAST_TIER_SETTINGS) plus
  `settings` (Settings field names), its lifespan run; closed when the module ends.
- `proxy`: the module's app on the baseline settings (SQLite in a temporary folder).
- `database_url` and `postgres_url` come from tests/proxy/conftest.py (SQLite and the real
  Postgres).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import pytest

from tests.support.proxy_app import InProcessProxy, MakeProxy, proxy_settings, run_proxy_app
from tests.support.proxy_baseline import upstream_simulator
from tests.support.simulator.process import SimulatorProcess

FAST_DIR = Path(__file__).resolve().parent


# Audit rows are stored within 20 ms rather than the default quarter of a second: tests that
# wait for a row wait that much less, and batching is the same code either way.
FAST_TIER_SETTINGS = {"proxy_audit_flush_seconds": 0.02}


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # First, so that `-m fast` / `-m "not fast"` see the marker when they select.
    for item in items:
        if FAST_DIR in item.path.parents:
            item.add_marker(pytest.mark.fast)


@pytest.fixture(scope="session")
def simulator() -> Iterator[SimulatorProcess]:
    with upstream_simulator() as sim:
        yield sim


@pytest.fixture(scope="module")
async def make_proxy(simulator: SimulatorProcess, tmp_path_factory: pytest.TempPathFactory
                     ) -> AsyncIterator[MakeProxy]:
    async with AsyncExitStack() as apps:
        async def make(**settings: Any) -> InProcessProxy:
            workdir = tmp_path_factory.mktemp("proxy")
            return await apps.enter_async_context(run_proxy_app(proxy_settings(
                workdir, **{**FAST_TIER_SETTINGS, "ollama_url": simulator.url, **settings})))

        yield make


@pytest.fixture(scope="module")
async def proxy(make_proxy: MakeProxy) -> InProcessProxy:
    return await make_proxy()
