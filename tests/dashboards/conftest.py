"""Fixtures for the monitoring tests (dashboards/).

- `promtool`: the path of Prometheus' promtool. Missing is a failure with the install command,
  never a skip: these checks are the only proof the rules and the config load.
- `live_metrics`: the text of /metrics from a real proxy process (`python -m proxy serve`) in
  front of the Ollama simulator, after a generation, a failed authentication and a cache lookup,
  so that the histograms and counters the rules use have series.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import jwt
import pytest

from proxy.simulator.process import run_simulator
from tests.dashboards.paths import REPO_ROOT

SECRET = "dashboards-test-secret-" + "x" * 40
METRICS_TOKEN = "dashboards-test-metrics-token"
PROMTOOL_HINT = (
    "promtool is not on PATH; install it with scripts/observability-tools "
    "(Debian: apt-get install -y prometheus)"
)


@pytest.fixture(scope="session")
def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.fail(PROMTOOL_HINT)
    return path


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _token(sub: str) -> str:
    now = int(time.time())
    return jwt.encode({"sub": sub, "role": "user", "iat": now, "exp": now + 600}, SECRET,
                      algorithm="HS256")


@pytest.fixture(scope="module")
def live_metrics(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    workdir = tmp_path_factory.mktemp("live-proxy")
    port = _free_port()
    with run_simulator(first_token_delay=0.01, tokens_per_second=400) as sim:
        env = {
            **{k: v for k, v in os.environ.items()
               if not k.startswith(("JWT_", "PROXY_", "OLLAMA_", "DATABASE_", "REDIS_"))},
            "PROXY_ENV": "dev",
            "JWT_SECRET": SECRET,
            "OLLAMA_URL": sim.url,
            "DATABASE_URL": f"sqlite+aiosqlite:///{workdir / 'proxy.db'}",
            "PROXY_METRICS_TOKEN": METRICS_TOKEN,
            "PROXY_AUDIT_SPOOL_PATH": str(workdir / "audit-spool.jsonl"),
            "PROXY_LOG_LEVEL": "warning",
            "PYTHONPATH": str(REPO_ROOT),
        }
        log_path = workdir / "proxy.log"
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                [sys.executable, "-m", "proxy", "serve", "--no-simulator", "--host",
                 "127.0.0.1", "--port", str(port)],
                cwd=workdir, env=env, stdout=log, stderr=subprocess.STDOUT,
            )
        url = f"http://127.0.0.1:{port}"
        try:
            _wait_until_up(url, process, log_path)
            yield _exercise_and_scrape(url)
        finally:
            process.terminate()
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _wait_until_up(url: str, process: subprocess.Popen[bytes], log_path: Path) -> None:
    deadline = time.monotonic() + 30
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"proxy exited with {process.returncode}:\n{log_path.read_text()}")
        try:
            httpx.get(f"{url}/api/llm/status", timeout=2)
            return
        except httpx.HTTPError:
            if time.monotonic() > deadline:
                raise RuntimeError(f"proxy did not start:\n{log_path.read_text()}") from None
            time.sleep(0.1)


def _exercise_and_scrape(url: str) -> str:
    headers = {"Authorization": f"Bearer {_token('dashboards-test')}"}
    with httpx.Client(base_url=url, timeout=30) as client:
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
        deadline = time.monotonic() + 10
        while True:
            response = client.get("/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"})
            assert response.status_code == 200, response.text
            text = response.text
            if ("llm_proxy_audit_rows_written_total 0.0" not in text
                    and "llm_proxy_upstream_up 1.0" in text) or time.monotonic() > deadline:
                return text
            time.sleep(0.2)
