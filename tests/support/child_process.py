"""What every server a test starts as a child process shares: it dies with the test run, its
start-up is awaited with its output at hand, and it is stopped politely first, then for good."""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Callable

# As `preexec_fn`: the child gets SIGTERM when the parent dies, so that a test run or a dev
# server killed without cleanup does not leave a child server behind.
from proxy.core.workers import die_with_parent

__all__ = ["die_with_parent", "stop_child", "wait_for_child"]


def stop_child(process: subprocess.Popen[bytes], grace: float = 5.0,
               first: signal.Signals = signal.SIGTERM) -> None:
    """`first` (SIGTERM), then SIGKILL if the child has not exited within `grace` seconds."""
    if process.poll() is not None:
        return
    process.send_signal(first)
    try:
        process.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def wait_for_child(process: subprocess.Popen[bytes], name: str,
                   not_ready: Callable[[], str | None], timeout: float,
                   logs: Callable[[], str], interval: float = 0.05) -> None:
    """Poll `not_ready` until it returns None (ready); until then it returns what it saw last.
    Fails with the child's output if the child exits first (RuntimeError) or `timeout` seconds
    pass (TimeoutError); `name` says which server in either message."""
    deadline = time.monotonic() + timeout
    while True:
        code = process.poll()
        if code is not None:
            raise RuntimeError(f"{name} exited with status {code} before it was ready.\n"
                               f"Its output:\n{logs()[-6000:]}")
        last = not_ready()
        if last is None:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"{name} was not ready within {timeout:g} s (last: {last}).\n"
                               f"Its output:\n{logs()[-6000:]}")
        time.sleep(interval)
