"""The audit log loses nothing: N requests give N rows, across a database outage, a graceful
restart, and (for spooled rows) a hard kill.

The bound a hard kill can lose is the rows still in the writer's in-memory queue: requests that
finished within the last PROXY_AUDIT_FLUSH_SECONDS. `test_hard_kill_keeps_every_spooled_row`
proves rows already spooled survive SIGKILL; `test_hard_kill_after_flush_keeps_every_row`
proves rows older than one flush interval are in the database.
"""

from __future__ import annotations

import hashlib
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
from tests.support.tokens import auth, make_token

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


def test_every_kind_of_request_gets_exactly_one_row(proxy_factory, simulator,
                                                    database_url: str) -> None:
    proxy = proxy_factory(OLLAMA_URL=simulator.url, DATABASE_URL=database_url,
                          PROXY_RATE_LIMIT="3/minute")
    user = f"u-{uuid.uuid4().hex[:8]}"
    responses = [generate(proxy, user) for _ in range(3)]                  # 200 ×3
    responses.append(generate(proxy, user))                                # 429
    responses.append(generate(proxy, user, model="x y"))                   # 422
    with proxy.client() as client:                                         # 401, no user
        responses.append(client.post("/api/llm/generate", json={"model": "llama3.2"}))
    assert [r.status_code for r in responses] == [200, 200, 200, 429, 422, 401]
    # The server names every request (X-Request-ID) and each name gets its own row, in
    # whichever batch the writer flushes it: wait for all six, then count.
    ids = [r.headers["x-request-id"] for r in responses]
    assert len(set(ids)) == len(ids)

    def rows_per_request() -> list[int]:
        return [count_rows(database_url, "SELECT count(*) FROM audit_log WHERE id = $1", rid)
                for rid in ids]

    wait_until(lambda: rows_per_request() == [1] * len(ids), timeout=20)
    wait_until(lambda: metric(proxy, "llm_proxy_audit_queue_depth") == 0)
    assert rows_per_request() == [1] * len(ids)
    assert count_rows(database_url, ROWS_FOR, user) == 5
    # The 401 has no user; its row carries the reason.
    assert count_rows(database_url,
                      'SELECT count(*) FROM audit_log WHERE id = $1 AND "user" IS NULL '
                      "AND status = 401 AND error LIKE $2", ids[-1], "%missing_token%") == 1
    assert count_rows(database_url, 'SELECT count(*) FROM audit_log WHERE "user" = $1 '
                      "AND status = 429", user) == 1
    digest = hashlib.sha256(b"audit me").hexdigest()
    assert count_rows(database_url,
                      'SELECT count(*) FROM audit_log WHERE "user" = $1 AND prompt_sha256 = $2 '
                      "AND prompt_text IS NULL AND completion_tokens = 3 AND ttft_ms > 0",
                      user, digest) == 3


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


def test_auth_failures_are_audited_with_their_reason(proxy_factory, simulator,
                                                     database_url: str) -> None:
    proxy = proxy_factory(OLLAMA_URL=simulator.url, DATABASE_URL=database_url)
    expired = make_token("eve", ttl=-300)
    with proxy.client() as client:
        assert client.get("/api/llm/models",
                          headers={"Authorization": f"Bearer {expired}"}).status_code == 401
    wait_until(lambda: count_rows(database_url, "SELECT count(*) FROM audit_log WHERE "
                                  "status = 401 AND error LIKE $1", "%expired%") >= 1)


def _refuse_prompts_of_13_chars(database_url: str) -> None:
    """Make the real database refuse some rows as data (a constraint), not as an outage."""
    import asyncio
    import sqlite3

    import asyncpg

    if database_url.startswith("sqlite"):
        with sqlite3.connect(database_url.split("///", 1)[1]) as conn:
            conn.execute("CREATE TRIGGER IF NOT EXISTS refuse_13 BEFORE INSERT ON audit_log "
                         "WHEN NEW.prompt_chars = 13 BEGIN SELECT RAISE(ABORT, 'refused'); END")
        return

    async def run() -> None:
        conn = await asyncpg.connect(database_url)
        try:
            await conn.execute("ALTER TABLE audit_log ADD CONSTRAINT refuse_13 "
                               "CHECK (prompt_chars <> 13)")
        finally:
            await conn.close()

    asyncio.run(run())


def test_a_row_the_database_refuses_goes_to_dead_letter_and_the_rest_are_stored(
    simulator, database_url: str, tmp_path: Path
) -> None:
    proxy = start_proxy(tmp_path, {"OLLAMA_URL": simulator.url, "DATABASE_URL": database_url})
    try:
        _refuse_prompts_of_13_chars(database_url)
        user = f"u-{uuid.uuid4().hex[:8]}"
        prompts = ["fine prompt 1", "a fine prompt", "fine", "another fine one"]
        assert [len(p) for p in prompts].count(13) == 2
        for prompt in prompts:
            assert generate(proxy, user, prompt=prompt).status_code == 200
        # The two storable rows arrive; the two refused ones do not block them.
        assert wait_rows(database_url, user, 2) == 2
        dead = tmp_path / "audit-spool.rejected.jsonl"
        # Refused rows not kept in the dead-letter file fail this wait.
        wait_until(lambda: dead.exists() and len(dead.read_text().splitlines()) >= 2)
        assert metric(proxy, "llm_proxy_audit_rows_rejected_total") == 2
        assert metric(proxy, "llm_proxy_audit_spooled_rows") == 0
        # Later rows still go straight to the database.
        assert generate(proxy, user, prompt="after that").status_code == 200
        assert wait_rows(database_url, user, 3) == 3
    finally:
        stop_proxy(proxy)
