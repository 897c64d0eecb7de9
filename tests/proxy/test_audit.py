"""The audit log loses nothing: N requests give N rows, across a database outage, a graceful
restart, and (for spooled rows) a hard kill. (One row per request, refused rows set aside and
audited refusals are checked in process, in fast/test_audit.py.)

The bound a hard kill can lose is the rows still in the writer's memory: requests that finished
within the last PROXY_AUDIT_SPOOL_AFTER_SECONDS, whatever the database does.
`test_hard_kill_keeps_every_spooled_row` proves rows already spooled survive SIGKILL;
`test_hard_kill_after_flush_keeps_every_row` proves rows older than one flush interval are in
the database; `test_rows_reach_the_spool_within_the_deadline_whatever_the_database_does` kills a
proxy one deadline after the last request of a database outage, silent or not, and loses none.
"""

from __future__ import annotations

import signal
import time
import uuid
from pathlib import Path

import pytest

from tests.proxy.audit_rows import ROWS_FOR, generate, wait_rows
from tests.proxy.outage import postgres_outage, url_through
from tests.support.database import count_rows
from tests.support.proxy_process import metric, start_proxy, stop_proxy
from tests.support.timing import scaled, wait_until

pytestmark = pytest.mark.usefixtures("sim")

# A flush interval and spool deadline no test outlasts however slow the machine: rows stay
# queued until shutdown.
LONG_FLUSH = str(min(300.0, scaled(60)))
KEEP_QUEUED = {"PROXY_AUDIT_FLUSH_SECONDS": LONG_FLUSH,
               "PROXY_AUDIT_SPOOL_AFTER_SECONDS": LONG_FLUSH}


def test_rows_survive_a_database_outage(simulator, postgres_url: str, tmp_path: Path) -> None:
    user = f"u-{uuid.uuid4().hex[:8]}"
    with postgres_outage(postgres_url) as link:
        url = url_through(link, postgres_url)
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
            # The rows are in the database; the spool is emptied just after.
            wait_until(lambda: metric(proxy, "llm_proxy_audit_spooled_rows") == 0
                       and spool.read_text() == "")
        finally:
            stop_proxy(proxy)


def test_graceful_restart_flushes_the_queue(simulator, database_url: str,
                                            tmp_path: Path) -> None:
    user = f"u-{uuid.uuid4().hex[:8]}"
    # A long flush interval keeps the rows queued until shutdown.
    proxy = start_proxy(tmp_path, {"OLLAMA_URL": simulator.url, "DATABASE_URL": database_url,
                                   **KEEP_QUEUED})
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
    user = f"u-{uuid.uuid4().hex[:8]}"
    with postgres_outage(postgres_url) as link:
        env = {"OLLAMA_URL": simulator.url, "DATABASE_URL": url_through(link, postgres_url)}
        proxy = start_proxy(tmp_path, {**env, **KEEP_QUEUED})
        for _ in range(7):
            assert generate(proxy, user).status_code == 200
        link.cut()
        proxy.process.send_signal(signal.SIGTERM)
        proxy.process.wait(scaled(30))
        assert len((tmp_path / "audit-spool.jsonl").read_text().splitlines()) == 7
        link.restore()
        successor = start_proxy(tmp_path, env)
        try:
            assert wait_rows(postgres_url, user, 7) == 7
        finally:
            stop_proxy(successor)


def test_hard_kill_keeps_every_spooled_row(simulator, postgres_url: str,
                                           tmp_path: Path) -> None:
    user = f"u-{uuid.uuid4().hex[:8]}"
    with postgres_outage(postgres_url) as link:
        env = {"OLLAMA_URL": simulator.url, "DATABASE_URL": url_through(link, postgres_url)}
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


# The spool deadline the fault tests set, and how many requests finish inside the outage.
SPOOL_AFTER = 1.0
REQUESTS_IN_OUTAGE = 40


@pytest.mark.parametrize("outage", ["blackhole", "cut"])
def test_rows_reach_the_spool_within_the_deadline_whatever_the_database_does(
        simulator, postgres_url: str, tmp_path: Path, outage: str) -> None:
    """A database that stops answering (blackhole) must not hold rows in memory: by
    PROXY_AUDIT_SPOOL_AFTER_SECONDS after each request finished its row is stored or fsynced in
    the spool, so a hard kill then loses none of them."""
    user = f"u-{uuid.uuid4().hex[:8]}"
    with postgres_outage(postgres_url) as link:
        env = {"OLLAMA_URL": simulator.url, "DATABASE_URL": url_through(link, postgres_url),
               "PROXY_AUDIT_SPOOL_AFTER_SECONDS": str(SPOOL_AFTER)}
        proxy = start_proxy(tmp_path, env)
        try:
            # A row stored first: the writer holds a pooled connection, which then goes silent.
            assert generate(proxy, user).status_code == 200
            assert wait_rows(postgres_url, user, 1) == 1
            getattr(link, outage)()
            for _ in range(REQUESTS_IN_OUTAGE):
                assert generate(proxy, user).status_code == 200
            # The deadline, from the last request's end, and no more.
            time.sleep(scaled(SPOOL_AFTER + 0.5))
            proxy.process.send_signal(signal.SIGKILL)
            proxy.process.wait(scaled(10))
        finally:
            stop_proxy(proxy)
        link.restore()
        successor = start_proxy(tmp_path, env)
        try:
            found = wait_rows(postgres_url, user, 1 + REQUESTS_IN_OUTAGE)
            assert found == 1 + REQUESTS_IN_OUTAGE, (
                f"{1 + REQUESTS_IN_OUTAGE - found} of {1 + REQUESTS_IN_OUTAGE} rows lost")
            assert metric(successor, "llm_proxy_audit_spooled_rows") == 0
        finally:
            stop_proxy(successor)
