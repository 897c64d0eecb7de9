"""`run_simulator`: the simulator as a child process, for tests that need real HTTP and TCP.

A separate process rather than an in-process server: the faults under test (connection resets,
refused connections, hung requests) must happen on a real socket, and the test's own event
loop must not be the one serving them.

The parent binds the listening socket (port 0 unless told) and hands it to the child, so there
is no window in which another test could grab a "free" port, and connections made before the
child is ready simply wait in the backlog.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from tests.support.child_process import die_with_parent, stop_child, wait_for_child
from tests.support.simulator.cli import ENV_PREFIX, bind_listener
from tests.support.simulator.config import SimulatorConfig

_PACKAGE_ROOT = Path(__file__).resolve().parents[3]  # the folder holding `tests/`


@dataclass
class SimulatorProcess:
    """A running simulator child process and small helpers for its control API."""

    host: str
    port: int
    process: subprocess.Popen[bytes]
    log_path: Path
    control_timeout: float = 5.0  # seconds each control call may take
    # One client for every control call: making one costs tens of milliseconds (its TLS
    # context), which a suite that resets the simulator before each test would pay each time.
    _http: httpx.Client | None = dataclasses.field(default=None, repr=False)

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def logs(self) -> str:
        """Everything the child wrote to stdout and stderr so far."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def _control(self, method: str, path: str, payload: Any = None) -> Any:
        if self._http is None:
            self._http = httpx.Client(timeout=self.control_timeout)
        response = self._http.request(method, f"{self.url}/__sim__/{path}", json=payload)
        response.raise_for_status()
        return response.json()

    def close(self) -> None:
        """Close the control API's client (the process is `run_simulator`'s to stop)."""
        if self._http is not None:
            self._http.close()
            self._http = None

    def stats(self) -> dict[str, Any]:
        result: dict[str, Any] = self._control("GET", "stats")
        return result

    def reset(self, *, config: bool = False) -> None:
        self._control("POST", "reset", {"config": config})

    def set_fault(self, mode: str, count: int | None = None, **extra: Any) -> dict[str, Any]:
        result: dict[str, Any] = self._control(
            "POST", "faults", {"mode": mode, "count": count, **extra}
        )
        return result

    def configure(self, **changes: Any) -> dict[str, Any]:
        result: dict[str, Any] = self._control("POST", "config", changes)
        return result


def _config_flags(config: dict[str, Any]) -> list[str]:
    try:
        SimulatorConfig(**config)  # fail here, with the field's own error, not in the child
    except TypeError as exc:
        known = ", ".join(f.name for f in dataclasses.fields(SimulatorConfig))
        raise TypeError(f"run_simulator: {exc}; known settings: {known}") from exc
    flags: list[str] = []
    for name, value in config.items():
        flag = "--" + name.replace("_", "-")
        if isinstance(value, bool):
            flags.append(flag if value else f"--no-{name.replace('_', '-')}")
        elif isinstance(value, list | tuple):
            flags += [flag, ",".join(value)]
        else:
            flags += [flag, str(value)]
    return flags


def _wait_until_ready(sim: SimulatorProcess, timeout: float) -> None:
    def not_answering() -> str | None:
        try:
            response = httpx.get(sim.url + "/", timeout=0.5)
        except httpx.HTTPError as exc:
            return repr(exc)
        if response.status_code == 200 and response.text == "Ollama is running":
            return None
        return f"GET /: {response.status_code} {response.text[:200]!r}"

    wait_for_child(sim.process, f"Ollama simulator on {sim.url}", not_answering, timeout,
                   sim.logs)


@contextlib.contextmanager
def run_simulator(
    port: int | None = None,
    *,
    host: str = "127.0.0.1",
    startup_timeout: float = 15.0,
    control_timeout: float = 5.0,
    log_level: str = "warning",
    **config: Any,
) -> Iterator[SimulatorProcess]:
    """Run `python -m tests.support.simulator` with `config` (SimulatorConfig fields) until exit.

    `port=None` picks a free port. The child's output goes to a temporary log file, read with
    `.logs()` and included in the error if it does not come up within `startup_timeout`.
    `control_timeout` bounds each control call (`stats()`, `configure()`, ...); a test suite on a
    slow machine raises both.
    """
    flags = _config_flags(config)
    sock = bind_listener(host, port or 0)
    actual_port = sock.getsockname()[1]
    # Only the settings passed here count: a stray SIM_* in the test's environment must not.
    env = {k: v for k, v in os.environ.items() if not k.startswith(ENV_PREFIX)}
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(_PACKAGE_ROOT), env.get("PYTHONPATH", "")) if p
    )
    log_fd, log_name = tempfile.mkstemp(prefix="ollama-simulator-", suffix=".log")
    log_path = Path(log_name)
    try:
        with sock, os.fdopen(log_fd, "wb") as log:
            process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "tests.support.simulator",
                    "--host",
                    host,
                    "--port",
                    str(actual_port),
                    "--fd",
                    str(sock.fileno()),
                    "--log-level",
                    log_level,
                    *flags,
                ],
                pass_fds=(sock.fileno(),),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                preexec_fn=die_with_parent,
            )
        # The parent's copy of the socket is closed by now: were it kept, the port would stay
        # open while the child "refuses" connections, and they would hang instead.
        sim = SimulatorProcess(host=host, port=actual_port, process=process, log_path=log_path,
                               control_timeout=control_timeout)
        try:
            _wait_until_ready(sim, startup_timeout)
            yield sim
        finally:
            sim.close()
            stop_child(process)
    finally:
        log_path.unlink(missing_ok=True)
