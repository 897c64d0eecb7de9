"""Several worker processes (PROXY_WORKERS): requests spread over them, and /metrics counts every
request once, whichever worker served it and whichever answers the scrape."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from prometheus_client.multiprocess import MultiProcessCollector

from proxy.core.settings import Settings
from proxy.core.workers import spool_path
from tests.support.proxy_process import metric
from tests.support.timing import scaled, wait_until
from tests.support.tokens import auth

pytestmark = [pytest.mark.usefixtures("sim"), pytest.mark.postgres]

REDIS = "redis://127.0.0.1:6379/0"
ROUND = 20


def served_by_each_worker(folder: Path) -> list[float]:
    """Generations each worker process counted, from its own metrics file."""
    counts = []
    for path in sorted(folder.glob("counter_*.db")):
        served = sum(sample.value for family in MultiProcessCollector.merge([str(path)])
                     for sample in family.samples
                     if sample.name == "llm_proxy_requests_total"
                     and sample.labels.get("endpoint") == "/api/llm/generate")
        if served:
            counts.append(served)
    return counts


def test_two_workers_count_every_request_once(proxy_factory, simulator, postgres_url: str,
                                              tmp_path: Path) -> None:
    metrics_dir = tmp_path / "metrics"
    proxy = proxy_factory(OLLAMA_URL=simulator.url, PROXY_WORKERS="2", REDIS_URL=REDIS,
                          DATABASE_URL=postgres_url, PROMETHEUS_MULTIPROC_DIR=str(metrics_dir))
    sent = 0

    def generate(n: int) -> int:
        # A connection per request, so that each one may land on either worker.
        return httpx.post(f"{proxy.url}/api/llm/generate", headers=auth(), timeout=scaled(30),
                          json={"model": "llama3.2", "prompt": f"n{n}", "stream": False,
                                "options": {"num_predict": 2}}).status_code

    def both_have_served() -> bool:
        # The proxy counts as started at its first answer, from whichever worker was ready: on
        # a busy machine the other may still be starting. Rounds go on until both have served.
        nonlocal sent
        with ThreadPoolExecutor(8) as pool:
            assert list(pool.map(generate, range(sent, sent + ROUND))) == [200] * ROUND
        sent += ROUND
        return len(served_by_each_worker(metrics_dir)) == 2

    wait_until(both_have_served, timeout=60)
    # A request is counted once its answer has gone out: the last ones may still be on it.
    wait_until(lambda: sum(served_by_each_worker(metrics_dir)) == sent)
    assert len(served_by_each_worker(metrics_dir)) == 2
    # Each scrape lands on one worker or the other; both report every worker's requests.
    for _ in range(4):
        assert metric(proxy, "llm_proxy_requests_total", endpoint="/api/llm/generate",
                      status="200") == sent


@pytest.mark.parametrize("missing", ["redis", "postgres"])
def test_several_workers_need_shared_state(tmp_path: Path, missing: str) -> None:
    stores = {"redis_url": None if missing == "redis" else REDIS,
              "database_url": f"sqlite+aiosqlite:///{tmp_path / 'p.db'}" if missing == "postgres"
              else "postgresql://llm@127.0.0.1:5432/llm"}
    with pytest.raises(ValueError, match="PROXY_WORKERS=2 needs REDIS_URL and a PostgreSQL"):
        Settings(proxy_workers=2, **stores)
    assert Settings(proxy_workers=1, **stores).worker_count == 1
    assert Settings(**stores).worker_count == 1  # the default: one process without shared state


def test_each_worker_has_its_own_spool() -> None:
    assert spool_path("/var/lib/proxy/audit-spool.jsonl", 0) == "/var/lib/proxy/audit-spool.jsonl"
    assert spool_path("/var/lib/proxy/audit-spool.jsonl", 2) == \
        "/var/lib/proxy/audit-spool.worker2.jsonl"
