"""The in-flight gauge of GET /metrics while a stream runs: over real HTTP, since only a real
server hands a stream over while it runs. Everything else about /metrics is tested in process,
in fast/test_metrics.py."""

from __future__ import annotations

import uuid

import httpx
import pytest

from tests.support.proxy_process import ProxyProcess, Samples, metric_samples
from tests.support.proxy_process import samples_sum as value
from tests.support.timing import scaled, wait_until
from tests.support.tokens import auth

pytestmark = pytest.mark.usefixtures("sim")

SCRAPE_TOKEN = "scrape-" + uuid.uuid4().hex
GENERATE = "/api/llm/generate"


@pytest.fixture(scope="module")
def metrics_proxy(proxy_factory, simulator) -> ProxyProcess:
    return proxy_factory(OLLAMA_URL=simulator.url, PROXY_METRICS_TOKEN=SCRAPE_TOKEN)


def scrape(proxy: ProxyProcess, token: str | None = SCRAPE_TOKEN) -> Samples:
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    response = httpx.get(f"{proxy.url}/metrics", headers=headers, timeout=scaled(10))
    assert response.status_code == 200, response.text
    return metric_samples(response.text)


def test_in_flight_gauge_counts_a_running_stream(metrics_proxy: ProxyProcess, sim) -> None:
    sim.configure(tokens_per_second=20)
    with metrics_proxy.client() as client, client.stream(
        "POST", GENERATE, headers=auth(),
        json={"model": "llama3.2", "prompt": "slowly", "options": {"num_predict": 20}},
    ) as response:
        lines = response.iter_lines()
        next(lines)  # the stream has started
        assert value(scrape(metrics_proxy), "llm_proxy_requests_in_flight",
                     endpoint=GENERATE) == 1
        for _ in lines:
            pass
    wait_until(lambda: value(scrape(metrics_proxy), "llm_proxy_requests_in_flight",
                             endpoint=GENERATE) == 0)
