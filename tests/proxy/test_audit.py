"""The audit log loses nothing: N requests give N rows, across a database outage, a graceful
restart, and (for spooled rows) a hard kill. (One row per request, refused rows set aside and
audited refusals are checked in process, in fast/test_audit.py.)

The bound a hard kill can lose is the rows still in the writer's in-memory queue: requests that
finished within the last PROXY_AUDIT_FLUSH_SECONDS. `test_hard_kill_keeps_every_spooled_row`
proves rows already spooled survive SIGKILL; `test_hard_kill_after_flush_keeps_every_row`
proves rows older than one flush interval are in the database.
"""

from __future__ import annotations

import signal
import time
import uuid
from pathlib import Path

import httpx
import pytest

from tests.proxy.outage import TcpOutage
from tests.support.database import count_rows
from tests.support.proxy_process import ProxyProcess, metric, start_proxy, stop_proxy
from tests.support.timing import scaled, wait_until
from tests.support.tokens import auth

pytestmark = pytest.mark.usefixtures("sim")

ROWS_FOR = 'SELECT count(*) FROM audit_log WHERE "user" = $1'
# A flush interval no test outlasts however slow the machine: rows stay queued until shutdown.
LONG_FLUSH = str(min(300.0, scaled(60)))


def generate(proxy: ProxyProcess, user: str, prompt: str = "audit me", **body: object
             ) -> httpx.Response:
    with proxy.client() as client:
        return client.post("/api/llm/generate", headers=auth(user),
                           json={"model": "llama3.2", "prompt": prompt, "stream": False,
                                 "options": {"num_predict": 3}, **body})




def wait_rows(database_url: str, user: str, expected: int, timeout: float = 20) -> int:
    """Poll until `user` has `expected` rows or the (scaled) budget is spent; return the count."""
    deadline = time.monotonic() + scaled(timeout)
    while True:
        try:
            found = count_rows(database_url, ROWS_FOR, user)
        except Exception:
            found = -1
        if found == expected or time.monotonic() > deadline:
            return found
        time.sleep(0.1)


def test_rows_survive_a_database_outage(simulator, postgres_url: str, tmp_path: Path) -> None:
    host, port = "127.0.0.1", int(postgres_url.split("@")[1].split("/")[0].split(":")[1])
    database = postgres_url.rsplit("/", 1)[1]
    user = f"u-{uuid.uuid4().hex[:8]}"
    with TcpOutage(host, port) as link:
        url = f"postgresql://postgres@127.0.0.1:{link.port}/{database}"
        proxy = start_proxy(tmp_path, {"OLLAMA_URL": simulator.url, "DATABASE_URL": url,
                                       "PROXY_AUDIT_RETRY_SECONDS": "0.5"})
        try:
            for _ in range(5):
                assert generate(proxy, user).status_code == 200
            assert wait_rows(postgres_url, user, 5) == 5
            link.cut()
            for _ in range(20):
                assert generate(proxy, user).status_code == 200
            # Rows not spooled during the outage fail this wait.
            wait_until(lambda: metric(proxy, "llm_proxy_audit_spooled_rows") >= 20, timeout=15)
            spool = tmp_path / "audit-spool.jsonl"
            assert len(spool.read_text().splitlines()) == 20
            assert count_rows(postgres_url, ROWS_FOR, user) == 5
            link.restore()
            assert wait_rows(postgres_url, user, 25) == 25
            assert metric(proxy, "llm_proxy_audit_spooled_rows") == 0
            assert spool.read_text() == ""
        finally:
            stop_proxy(proxy)


def test_graceful_restart_flushes_the_queue(simulator, database_url: str,
                                            tmp_path: Path) -> None:
    user = f"u-{uuid.uuid4().hex[:8]}"
    # A long flush interval keeps the rows queued until shutdown.
    proxy = start_proxy(tmp_path, {"OLLAMA_URL": simulator.url, "DATABASE_URL": database_url,
                                   "PROXY_AUDIT_FLUSH_SECONDS": LONG_FLUSH})
    try:
        for _ in range(12):
            assert generate(proxy, user).status_code == 200
        assert count_rows(database_url, ROWS_FOR, user) == 0
        assert metric(proxy, "llm_proxy_audit_queue_depth") > 0
    finally:
        proxy.process.send_signal(signal.SIGTERM)
        proxy.process.wait(scaled(30))
    assert count_rows(database_url, ROWS_FOR, user) == 12


def test_shutdown_during_an_outage_spools_then_the_next_process_replays(
    simulator, postgres_url: str, tmp_path: Path
) -> None:
    port = int(postgres_url.split("@")[1].split("/")[0].split(":")[1])
    database = postgres_url.rsplit("/", 1)[1]
    user = f"u-{uuid.uuid4().hex[:8]}"
    with TcpOutage("127.0.0.1", port) as link:
        env = {"OLLAMA_URL": simulator.url,
               "DATABASE_URL": f"postgresql://postgres@127.0.0.1:{link.port}/{database}",
               "PROXY_AUDIT_FLUSH_SECONDS": LONG_FLUSH}
        proxy = start_proxy(tmp_path, env)
        for _ in range(7):
            assert generate(proxy, user).status_code == 200
        link.cut()
        proxy.process.send_signal(signal.SIGTERM)
        proxy.process.wait(scaled(30))
        assert len((tmp_path / "audit-spool.jsonl").read_text().splitlines()) == 7
        link.restore()
        successor = start_proxy(tmp_path, {**env, "PROXY_AUDIT_FLUSH_SECONDS": "0.25"})
        try:
            assert wait_rows(postgres_url, user, 7) == 7
        finally:
            stop_proxy(successor)


def test_hard_kill_keeps_every_spooled_row(simulator, postgres_url: str,
                                           tmp_path: Path) -> None:
    port = int(postgres_url.split("@")[1].split("/")[0].split(":")[1])
    database = postgres_url.rsplit("/", 1)[1]
    user = f"u-{uuid.uuid4().hex[:8]}"
    with TcpOutage("127.0.0.1", port) as link:
        env = {"OLLAMA_URL": simulator.url,
               "DATABASE_URL": f"postgresql://postgres@127.0.0.1:{link.port}/{database}"}
        proxy = start_proxy(tmp_path, env)
        link.cut()
        for _ in range(9):
            assert generate(proxy, user).status_code == 200
        wait_until(lambda: metric(proxy, "llm_proxy_audit_spooled_rows") >= 9, timeout=15)
        proxy.process.send_signal(signal.SIGKILL)
        proxy.process.wait(scaled(10))
        link.restore()
        successor = start_proxy(tmp_path, env)
        try:
            assert wait_rows(postgres_url, user, 9) == 9
        finally:
            stop_proxy(successor)


def test_hard_kill_after_flush_keeps_every_row(simulator, database_url: str,
                                               tmp_path: Path) -> None:
    user = f"u-{uuid.uuid4().hex[:8]}"
    proxy = start_proxy(tmp_path, {"OLLAMA_URL": simulator.url, "DATABASE_URL": database_url})
    for _ in range(15):
        assert generate(proxy, user).status_code == 200
    # The writer stores rows on its own, every flush interval (0.25 s), without waiting for a
    # shutdown: they reach the database while the process runs, and a kill cannot take them.
    wait_until(lambda: metric(proxy, "llm_proxy_audit_queue_depth") == 0)
    assert wait_rows(database_url, user, 15) == 15
    proxy.process.send_signal(signal.SIGKILL)
    proxy.process.wait(scaled(10))
    assert count_rows(database_url, ROWS_FOR, user) == 15
