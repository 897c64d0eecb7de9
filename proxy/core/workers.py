"""Serving with several worker processes (PROXY_WORKERS > 1): one process uses one core.

The parent binds the port, migrates the database once (so that the workers do not race to),
then forks the workers; each builds its own app and serves the shared socket with uvicorn, and
the kernel spreads connections among them. The parent only supervises: a worker that exits is
started again (unless it died within `QUICK_EXIT_SECONDS` of its start: a worker that cannot
start would only be restarted for ever, so the whole server stops instead), and SIGTERM/SIGINT
stop every worker gracefully. Each worker asks Linux for SIGTERM when the parent dies, so a
`kill -9` of the parent leaves no worker behind.

What the workers share, and how:
- rate limits, concurrency slots and the response cache: Redis, and the audit log: PostgreSQL
  (settings refuse PROXY_WORKERS > 1 without both);
- the audit spool: one file per worker index (`<spool>` for worker 0, `<stem>.worker<N><suffix>`
  for the others), so no two processes append to or replay one file; a restarted worker takes
  over its predecessor's. A spool left by a worker index above the current PROXY_WORKERS waits
  until that many workers run again;
- metrics: prometheus-client's multiprocess mode (`core/metrics.py`), in PROMETHEUS_MULTIPROC_DIR
  if the operator sets it (emptied at start), else in a temporary folder removed at exit;
- the development mode's per-process JWT secret: made before the fork, so it is the same in
  every worker.

Forking (not uvicorn's own `--workers`, which spawns fresh interpreters and pickles its
configuration) keeps the configuration as the parent built it, the HTTP protocol class
included (`core/server.py`).
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import signal
import socket
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from proxy.core.settings import Settings

log = logging.getLogger("proxy.workers")

QUICK_EXIT_SECONDS = 5.0
METRICS_DIR = "PROMETHEUS_MULTIPROC_DIR"


def spool_path(path: str, index: int) -> str:
    """Worker `index`'s audit spool: the configured file for worker 0, one beside it for each
    other worker."""
    if index == 0:
        return path
    spool = Path(path)
    return str(spool.with_name(f"{spool.stem}.worker{index}{spool.suffix}"))


def _metrics_dir() -> tuple[Path, bool]:
    """The multiprocess metrics folder, emptied, and whether it is ours to remove. Set in the
    environment before prometheus-client is imported: it chooses its value storage then."""
    given = os.environ.get(METRICS_DIR)
    if given:
        folder = Path(given)
        folder.mkdir(parents=True, exist_ok=True)
        for stale in folder.glob("*.db"):
            stale.unlink()
        return folder, False
    folder = Path(tempfile.mkdtemp(prefix="llm-proxy-metrics-"))
    os.environ[METRICS_DIR] = str(folder)
    return folder, True


def _listen(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.create_server((host, port), family=family, backlog=2048)
    sock.set_inheritable(True)
    return sock


def die_with_parent() -> None:
    """Ask Linux to send this process SIGTERM when its parent dies (elsewhere: nothing), so
    that a parent killed without cleanup leaves no child serving behind."""
    if sys.platform == "linux":
        import ctypes

        pr_set_pdeathsig = 1
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)


# Builds the ASGI app in a worker: given by the caller (the CLI), since the app is a layer above
# this one, and called only after the fork, once the metrics mode is chosen.
AppFactory = Callable[[Settings], Any]


def _worker(settings: Settings, index: int, sock: socket.socket, app: AppFactory) -> None:
    """The body of a forked worker; never returns."""
    code = 1
    try:
        die_with_parent()
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        import uvicorn

        from proxy.core.server import server_options

        own = settings.model_copy(update={
            "proxy_audit_spool_path": spool_path(settings.proxy_audit_spool_path, index)})
        server = uvicorn.Server(uvicorn.Config(app(own), **server_options(own)))
        server.run(sockets=[sock])
        code = 0
    except BaseException:
        traceback.print_exc()
    finally:
        os._exit(code)


def _migrate(settings: Settings) -> None:
    """Migrate once, before the workers start; if the database is down, each worker starts
    without it and migrates when it returns (as one process does)."""
    if not settings.proxy_auto_migrate:
        return
    from proxy.core.db import migrate_database
    from proxy.core.errors import DatabaseUnavailable

    try:
        asyncio.run(migrate_database(settings))
    except DatabaseUnavailable:
        log.warning("the database cannot be reached: the workers start without it")


def run_workers(settings: Settings, host: str, port: int, app: AppFactory) -> int:
    """Serve `host:port` with `settings.worker_count` worker processes, each running `app`,
    until SIGTERM/SIGINT; the exit status."""
    folder, ours = _metrics_dir()
    from prometheus_client import multiprocess

    sock = _listen(host, port)
    _migrate(settings)
    workers: dict[int, tuple[int, float]] = {}  # pid -> (index, started)
    stopping = False

    def start(index: int) -> None:
        pid = os.fork()
        if pid == 0:
            _worker(settings, index, sock, app)
        workers[pid] = (index, time.monotonic())

    def stop(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True
        for pid in workers:
            os.kill(pid, signal.SIGTERM)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    for index in range(settings.worker_count):
        start(index)
    print(f"serving with {settings.worker_count} worker processes (PROXY_WORKERS)", flush=True)
    status = 0
    while workers:
        try:
            pid, code = os.wait()
        except ChildProcessError:
            break
        index, started = workers.pop(pid)
        multiprocess.mark_process_dead(pid)  # type: ignore[no-untyped-call]
        if stopping:
            continue
        if time.monotonic() - started < QUICK_EXIT_SECONDS:
            print(f"worker {index} exited at once (status {code}); stopping", file=sys.stderr,
                  flush=True)
            status = 1
            stop(signal.SIGTERM, None)
            continue
        print(f"worker {index} exited (status {code}); starting it again", file=sys.stderr,
              flush=True)
        start(index)
    sock.close()
    if ours:
        shutil.rmtree(folder, ignore_errors=True)
    return status
