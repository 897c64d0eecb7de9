"""Fixtures for the proxy's tests: real servers in separate processes, talking real HTTP.

- `simulator`: the Ollama simulator (`python -m proxy.simulator`), one per test module.
- `proxy_server`: the proxy (`python -m proxy serve`) in front of it, on SQLite by default.
- `database_url`: parametrised over SQLite and the real Postgres (`TEST_POSTGRES_URL`, default
  the local server on 127.0.0.1:5432); every Postgres test run gets a fresh database.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import jwt
import pytest

from proxy.simulator.process import SimulatorProcess, run_simulator
from tests.timing import scaled

REPO_ROOT = Path(__file__).resolve().parents[2]
SECRET = "test-secret-" + "x" * 40
POSTGRES_ADMIN_URL = os.environ.get(
    "TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def make_token(sub: str = "alice", role: str = "user", ttl: int = 600,
               secret: str = SECRET, **extra: Any) -> str:
    """A token minted now: call it inside the test (or a function-scoped fixture) that uses it,
    never at import time, so it cannot expire however long the suite has been running."""
    now = int(time.time())
    claims: dict[str, Any] = {"sub": sub, "role": role, "iat": now, "exp": now + ttl, **extra}
    return jwt.encode({k: v for k, v in claims.items() if v is not None}, secret,
                      algorithm="HS256")


def auth(sub: str = "alice", role: str = "user") -> dict[str, str]:
    return {"Authorization": f"Bearer {make_token(sub, role)}"}


def admin_auth() -> dict[str, str]:
    """Headers for the test administrator, minted at the call (see `make_token`)."""
    return auth("root", "admin")


@dataclass
class ProxyProcess:
    url: str
    process: subprocess.Popen[bytes]
    log_path: Path
    env: dict[str, str] = field(default_factory=dict)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def client(self, **kwargs: Any) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=scaled(30), **kwargs)


def start_proxy(tmp_path: Path, env: dict[str, str], wait: bool = True) -> ProxyProcess:
    port = free_port()
    full_env = {
        **{k: v for k, v in os.environ.items()
           if not k.startswith(("JWT_", "PROXY_", "OLLAMA_", "DATABASE_", "REDIS_"))},
        "PROXY_ENV": "dev",
        "JWT_SECRET": SECRET,
        "DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / f'proxy-{port}.db'}",
        "PROXY_LOG_LEVEL": "warning",
        # Functional tests send far more than 10 requests a minute as one user; the limits
        # themselves are tested with their defaults in test_limits.py.
        "PROXY_RATE_LIMIT": "100000/minute",
        "PROXY_CONCURRENCY_LIMIT": "50",
        "PROXY_AUDIT_SPOOL_PATH": str(tmp_path / "audit-spool.jsonl"),
        **env,
    }
    log_path = tmp_path / f"proxy-{port}.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "proxy", "serve", "--no-simulator", "--host", "127.0.0.1",
             "--port", str(port)],
            cwd=tmp_path, env=full_env, stdout=log, stderr=subprocess.STDOUT,
        )
    proxy = ProxyProcess(f"http://127.0.0.1:{port}", process, log_path, full_env)
    if wait:
        deadline = time.monotonic() + scaled(30)
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"proxy exited with {process.returncode}:\n{proxy.log()}")
            try:
                httpx.get(f"{proxy.url}/api/llm/status", timeout=scaled(2))
                break
            except httpx.HTTPError:
                if time.monotonic() > deadline:
                    stop_proxy(proxy)
                    raise RuntimeError(f"proxy did not start:\n{proxy.log()}") from None
                time.sleep(0.1)
    return proxy


def stop_proxy(proxy: ProxyProcess) -> None:
    if proxy.process.poll() is None:
        proxy.process.terminate()
        try:
            proxy.process.wait(scaled(10))
        except subprocess.TimeoutExpired:
            proxy.process.kill()
            proxy.process.wait()


@pytest.fixture(scope="module")
def simulator() -> Iterator[SimulatorProcess]:
    with run_simulator(first_token_delay=0.01, tokens_per_second=400,
                       startup_timeout=scaled(15), control_timeout=scaled(5)) as sim:
        yield sim


@pytest.fixture
def sim(simulator: SimulatorProcess) -> SimulatorProcess:
    """The module's simulator, with faults, counters and settings reset for this test."""
    simulator.reset(config=True)
    return simulator


def sim_stats(sim: SimulatorProcess) -> dict[str, Any]:
    response = httpx.get(f"{sim.url}/__sim__/stats", timeout=scaled(5))
    response.raise_for_status()
    data: dict[str, Any] = response.json()
    return data


def sim_fault(sim: SimulatorProcess, mode: str, count: int | None = None) -> None:
    httpx.post(f"{sim.url}/__sim__/faults", json={"mode": mode, "count": count},
               timeout=scaled(5)).raise_for_status()


def _postgres_database() -> Iterator[str]:
    import asyncio

    name = f"proxy_test_{uuid.uuid4().hex[:10]}"
    admin_url = POSTGRES_ADMIN_URL

    async def run(sql: str) -> None:
        conn = await asyncpg.connect(admin_url)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(run(f'CREATE DATABASE "{name}"'))
    base = admin_url.rsplit("/", 1)[0]
    try:
        yield f"{base}/{name}"
    finally:
        asyncio.run(run(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture(scope="module",
                params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
                 ) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path_factory.mktemp('db') / 'proxy.db'}"
    else:
        yield from _postgres_database()


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
    yield from _postgres_database()


def count_rows(database_url: str, sql: str, *args: object) -> int:
    """Run a COUNT query directly against the database (not through the proxy)."""
    import asyncio
    import sqlite3

    if database_url.startswith("sqlite"):
        path = database_url.split("///", 1)[1]
        with sqlite3.connect(path) as conn:
            return int(conn.execute(sql.replace("$1", "?").replace("$2", "?"), args)
                       .fetchone()[0])

    async def run() -> int:
        conn = await asyncpg.connect(database_url.replace("+asyncpg", ""))
        try:
            return int(await conn.fetchval(sql, *args))
        finally:
            await conn.close()

    return asyncio.run(run())


def metric(proxy: ProxyProcess, name: str, **labels: str) -> float:
    """The sum of the samples called `name` on the proxy's /metrics whose labels include
    `labels` (the test proxies serve /metrics without a token in dev mode)."""
    from prometheus_client.parser import text_string_to_metric_families

    text = httpx.get(f"{proxy.url}/metrics", timeout=scaled(10)).text
    named = [sample for family in text_string_to_metric_families(text)
             for sample in family.samples if sample.name == name]
    if not named:
        raise AssertionError(f"{name} is not in /metrics")
    return sum(sample.value for sample in named
               if all(sample.labels.get(k) == v for k, v in labels.items()))
