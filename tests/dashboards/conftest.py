"""Fixtures for the monitoring tests (dashboards/).

- `promtool`, `amtool`: the paths of Prometheus' promtool and Alertmanager's amtool. Missing is a
  failure with the install command, never a skip: these checks are the only proof the rules and
  the configs load.
- `live_metrics`: the text of /metrics from a real proxy process (`python -m proxy serve`) in
  front of the Ollama simulator, after a generation, a failed authentication and a cache lookup,
  so that the histograms and counters the rules use have series.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator

import httpx
import pytest

from tests.support.proxy_process import start_proxy, stop_proxy
from tests.support.simulator.process import run_simulator
from tests.support.timing import scaled
from tests.support.tokens import make_token

SECRET = "dashboards-test-secret-" + "x" * 40
METRICS_TOKEN = "dashboards-test-metrics-token"
# tool -> the Debian package that ships it
TOOL_PACKAGES = {"promtool": "prometheus", "amtool": "prometheus-alertmanager"}


def required_tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(
            f"{name} is not on PATH; install it with scripts/observability-tools "
            f"(Debian: apt-get install -y {TOOL_PACKAGES[name]})"
        )
    return path


@pytest.fixture(scope="session")
def promtool() -> str:
    return required_tool("promtool")


@pytest.fixture(scope="session")
def amtool() -> str:
    return required_tool("amtool")


@pytest.fixture(scope="module")
def live_metrics(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    workdir = tmp_path_factory.mktemp("live-proxy")
    with run_simulator(first_token_delay=0.01, tokens_per_second=400,
                       startup_timeout=scaled(15), control_timeout=scaled(5)) as sim:
        proxy = start_proxy(workdir, {"OLLAMA_URL": sim.url, "JWT_SECRET": SECRET,
                                      "PROXY_METRICS_TOKEN": METRICS_TOKEN})
        try:
            yield _exercise_and_scrape(proxy.url)
        finally:
            stop_proxy(proxy)


def _exercise_and_scrape(url: str) -> str:
    headers = {"Authorization": f"Bearer {make_token('dashboards-test', secret=SECRET)}"}
    with httpx.Client(base_url=url, timeout=scaled(30)) as client:
        streamed = client.post("/api/llm/generate", headers=headers,
                               json={"model": "llama3.2", "prompt": "Why is the sky blue?"})
        assert streamed.status_code == 200, streamed.text
        # Deterministic and not streamed: looked up in the response cache.
        cached = client.post("/api/llm/generate", headers=headers,
                             json={"model": "llama3.2", "prompt": "Hi", "stream": False,
                                   "options": {"temperature": 0}})
        assert cached.status_code == 200, cached.text
        assert client.get("/api/llm/models").status_code == 401
        # The audit writer and the upstream probe run off the request path; let them report.
        # At the deadline the last scrape is returned all the same: the tests reading it then
        # name the series that is missing.
        deadline = time.monotonic() + scaled(10)
        while True:
            response = client.get("/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"})
            assert response.status_code == 200, response.text
            text = response.text
            if ("llm_proxy_audit_rows_written_total 0.0" not in text
                    and "llm_proxy_upstream_up 1.0" in text) or time.monotonic() > deadline:
                return text
            time.sleep(0.2)
