"""What every test proxy runs with unless its test says otherwise, whichever way it runs: as a
process (tests/support/proxy_process.py, these settings as environment variables) or in the
test's own process (tests/support/proxy_app.py, as Settings arguments); and the simulator
that stands in for Ollama in front of them."""

from __future__ import annotations

from contextlib import AbstractContextManager
from pathlib import Path

from tests.support.simulator.process import SimulatorProcess, run_simulator
from tests.support.timing import scaled
from tests.support.tokens import SECRET

# The variables a developer's shell may hold for a proxy of their own; a test proxy reads none.
PROXY_ENV_PREFIXES = ("JWT_", "PROXY_", "OLLAMA_", "DATABASE_", "REDIS_")


def baseline_settings(workdir: Path, database_file: str = "proxy.db") -> dict[str, str]:
    """The test proxy's settings by field name: dev mode, the test secret, SQLite and the audit
    spool in `workdir`, in-process limits."""
    return {
        "proxy_env": "dev",
        "jwt_secret": SECRET,
        "database_url": f"sqlite+aiosqlite:///{workdir / database_file}",
        "proxy_log_level": "warning",
        # Functional tests send far more than 10 requests a minute as one user; the limits
        # themselves are tested with their defaults in test_limits.py.
        "proxy_rate_limit": "100000/minute",
        "proxy_concurrency_limit": "50",
        "proxy_audit_spool_path": str(workdir / "audit-spool.jsonl"),
        # One process, whatever the host: a test that kills "the proxy" kills all of it.
        "proxy_workers": "1",
    }


def upstream_simulator() -> AbstractContextManager[SimulatorProcess]:
    """The Ollama simulator at the speed the proxy's tests expect (fast, so that a generation
    of a few tokens takes milliseconds)."""
    return run_simulator(first_token_delay=0.01, tokens_per_second=400,
                         startup_timeout=scaled(15), control_timeout=scaled(5))
