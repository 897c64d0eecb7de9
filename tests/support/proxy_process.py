"""The proxy as a real server in its own process (`python -m proxy serve`), and what tests read
from it and from the simulator's control API: the one place a test starts a proxy process (the
fast tier runs the app in the test's own process: tests/support/proxy_app.py)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from tests.support.child_process import stop_child
from tests.support.proxy_baseline import PROXY_ENV_PREFIXES, baseline_settings
from tests.support.simulator.process import SimulatorProcess
from tests.support.timing import scaled
from tests.support.tokens import admin_auth


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


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


# How long a proxy process may take to answer its first request. Most of a start is importing
# (about 1.5 s of CPU); on a busy 2-core machine, with the other lane building images and
# starting the stack, starts of up to 15 s were measured. A process that exits is noticed at
# once: only a start that hangs waits this long.
START_SECONDS = 60


def start_proxy(tmp_path: Path, env: dict[str, str], wait: bool = True) -> ProxyProcess:
    port = free_port()
    full_env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(PROXY_ENV_PREFIXES)},
        **{name.upper(): value
           for name, value in baseline_settings(tmp_path, f"proxy-{port}.db").items()},
        # A process that does not start is asked where it is (SIGABRT, see below): with the
        # fault handler on, Python writes every thread's stack to the log first.
        "PYTHONFAULTHANDLER": "1",
        **env,
    }
    log_path = tmp_path / f"proxy-{port}.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "proxy", "serve", "--host", "127.0.0.1",
             "--port", str(port)],
            cwd=tmp_path, env=full_env, stdout=log, stderr=subprocess.STDOUT,
        )
    proxy = ProxyProcess(f"http://127.0.0.1:{port}", process, log_path, full_env)
    if wait:
        deadline = time.monotonic() + scaled(START_SECONDS)
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"proxy exited with {process.returncode}:\n{proxy.log()}")
            try:
                # Any answer means the server is up. The status page checks each backend for
                # up to 3 s (CHECK_TIMEOUT_SECONDS), so a busy machine can make it that slow:
                # a shorter wait would never see an answer there.
                httpx.get(f"{proxy.url}/api/llm/status", timeout=scaled(10))
                break
            except httpx.HTTPError:
                if time.monotonic() > deadline:
                    _abort_with_stacks(proxy)
                    raise RuntimeError(f"proxy did not answer within {scaled(START_SECONDS):g} "
                                       f"s of starting; its log, ending with where each of "
                                       f"its threads was:\n{proxy.log()}") from None
                time.sleep(0.1)
    return proxy


def _abort_with_stacks(proxy: ProxyProcess) -> None:
    """End a proxy that hangs so that its log says where: SIGABRT makes Python's fault handler
    write each thread's stack before the process dies."""
    stop_child(proxy.process, scaled(10), first=signal.SIGABRT)


def stop_proxy(proxy: ProxyProcess) -> None:
    stop_child(proxy.process, scaled(10))


def sim_stats(sim: SimulatorProcess) -> dict[str, Any]:
    return sim.stats()


def sim_fault(sim: SimulatorProcess, mode: str, count: int | None = None) -> None:
    sim.set_fault(mode, count)


# (name, labels, value) of each sample in a /metrics text.
Samples = list[tuple[str, dict[str, str], float]]


def metric_samples(text: str) -> Samples:
    from prometheus_client.parser import text_string_to_metric_families

    return [(sample.name, dict(sample.labels), sample.value)
            for family in text_string_to_metric_families(text) for sample in family.samples]


def samples_sum(samples: Samples, name: str, **labels: str) -> float:
    """The sum of the samples called `name` whose labels include `labels` (0 if none)."""
    return sum(value for sample_name, sample_labels, value in samples
               if sample_name == name
               and all(sample_labels.get(k) == v for k, v in labels.items()))


def metric_value(text: str, name: str, **labels: str) -> float:
    """`samples_sum` of a /metrics text; AssertionError if no sample is called `name`."""
    samples = metric_samples(text)
    if not any(sample_name == name for sample_name, _, _ in samples):
        raise AssertionError(f"{name} is not in /metrics")
    return samples_sum(samples, name, **labels)


def metric(proxy: ProxyProcess, name: str, **labels: str) -> float:
    """`metric_value` of the proxy's /metrics (the test proxies serve /metrics without a token
    in dev mode)."""
    return metric_value(httpx.get(f"{proxy.url}/metrics", timeout=scaled(10)).text, name,
                        **labels)


def counted(proxy: ProxyProcess, name: str, **labels: str) -> float:
    """A counter's value on /metrics; 0 before its first sample exists."""
    try:
        return metric(proxy, name, **labels)
    except AssertionError:
        return 0.0


def audit_entries(proxy: ProxyProcess, **filters: str | int) -> list[dict[str, Any]]:
    """The proxy's audit rows through its admin API (newest first), filtered as the API
    filters them (`user`, `status`, ...)."""
    response = httpx.get(f"{proxy.url}/api/admin/audit", headers=admin_auth(),
                         params={"limit": 500, **filters}, timeout=scaled(30))
    assert response.status_code == 200, response.text
    entries: list[dict[str, Any]] = response.json()["entries"]
    return entries
