"""The proxy app in the test's own process, for the fast tier: `create_app(settings)` with its
lifespan run (migrations, the audit writer, the upstream probe), driven through
`httpx.ASGITransport`. Milliseconds a request, and no proxy process to start.

There is no socket between the test and the app, hence no uvicorn and no real streaming (the
transport hands over a response once the app has finished it): what needs those (stream timing,
client disconnects, header and body deadlines, connection limits, WebSockets, process kills and
restarts, the server's own log) is tested against a real server (tests/support/proxy_process.py).
The upstream is still real: the Ollama simulator, reached over HTTP.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from fastapi import FastAPI
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource

from proxy.core.settings import Settings
from proxy.main import create_app
from tests.support.proxy_baseline import baseline_settings
from tests.support.proxy_process import metric_value
from tests.support.timing import scaled, wait_until_async

BASE_URL = "http://proxy.test"


class ExplicitSettings(Settings):
    """Settings from their arguments alone. No environment variable and no `.env` file is read,
    so nothing a developer has exported for a proxy of their own (PROXY_*, JWT_*, OLLAMA_*,
    DATABASE_URL, REDIS_URL) changes what a test runs against."""

    @classmethod
    def settings_customise_sources(
        cls, settings_cls: type[BaseSettings], init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource, dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings,)


def proxy_settings(workdir: Path, **overrides: Any) -> Settings:
    """The test baseline (tests/support/proxy_baseline.py) with `overrides`, by field name."""
    return ExplicitSettings(**{**baseline_settings(workdir), **overrides})


@dataclass
class InProcessProxy:
    app: FastAPI
    settings: Settings
    client: httpx.AsyncClient

    @property
    def database_url(self) -> str:
        return self.settings.database_url

    async def metric(self, name: str, **labels: str) -> float:
        """`metric_value` of the app's /metrics (served without a token in dev mode)."""
        return metric_value((await self.client.get("/metrics")).text, name, **labels)

    async def counted(self, name: str, **labels: str) -> float:
        """`metric`, but 0 before the first sample of `name` exists."""
        try:
            return await self.metric(name, **labels)
        except AssertionError:
            return 0.0


# The fast tier's `make_proxy` fixture: an app on the test baseline plus the given settings.
MakeProxy = Callable[..., Awaitable[InProcessProxy]]


AUDIT_QUEUE_DEPTH = "llm_proxy_audit_queue_depth"


async def _audit_rows_stored(app: FastAPI) -> None:
    """Wait (a bounded while) until the audit writer has stored what it was given.

    Shutting the app down cancels the writer; cancelled half-way through an insert on SQLite,
    it can leave the write lock with a connection being torn down, and the final flush then
    waits on that lock. A test that just sent a request would hit that at every teardown, so
    an app on SQLite is closed the way a drained server is: with its audit queue empty.
    """
    registry = app.state.proxy.metrics.registry

    async def stored() -> bool:
        return registry.get_sample_value(AUDIT_QUEUE_DEPTH) == 0

    with contextlib.suppress(AssertionError):  # a database that is down: rows go to the spool
        await wait_until_async(stored, timeout=10, interval=0.01)


@asynccontextmanager
async def run_proxy_app(settings: Settings) -> AsyncIterator[InProcessProxy]:
    app = create_app(settings)
    async with app.router.lifespan_context(app), httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url=BASE_URL, timeout=scaled(30),
    ) as client:
        yield InProcessProxy(app, settings, client)
        if settings.is_sqlite:
            await _audit_rows_stored(app)
