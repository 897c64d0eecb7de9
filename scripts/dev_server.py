#!/usr/bin/env python3
"""`scripts/run`: the proxy for development, with the Ollama simulator when no upstream is set.

The proxy itself never starts an upstream, and the simulator ships in no package or image: it
lives with the tests (tests/support/simulator). When the proxy is in dev mode and `OLLAMA_URL`
is configured neither in the environment nor in ./.env, this starts the simulator on a free
loopback port, points the proxy at it, and stops it when the proxy exits. Every argument goes
to `python -m proxy serve`.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from contextlib import ExitStack
from pathlib import Path

from pydantic import ValidationError

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from proxy.core.settings import Settings  # noqa: E402
from tests.support.simulator.process import run_simulator  # noqa: E402


def wants_simulator() -> bool:
    """Dev mode with no upstream configured (environment or .env, as the proxy reads them)."""
    try:
        settings = Settings()
    except ValidationError:
        return False  # `proxy serve` reports the configuration error itself
    return settings.proxy_env == "dev" and "ollama_url" not in settings.model_fields_set


def main(argv: list[str]) -> int:
    with ExitStack() as stack:
        env = dict(os.environ)
        if wants_simulator():
            print("OLLAMA_URL is not set: starting the Ollama simulator (development only)...",
                  flush=True)
            simulator = stack.enter_context(run_simulator())
            env["OLLAMA_URL"] = simulator.url
        proxy = subprocess.Popen([sys.executable, "-m", "proxy", "serve", *argv], env=env)
        # A stop request for this launcher is a stop request for the proxy; the ExitStack then
        # stops the simulator. Ctrl-C reaches both processes through the terminal.
        signal.signal(signal.SIGTERM, lambda *_: proxy.terminate())
        try:
            return proxy.wait()
        except KeyboardInterrupt:
            return proxy.wait()


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
