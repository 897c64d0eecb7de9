"""The command line: --help, dev tokens, migrations, the dev quick start path."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import time
from pathlib import Path
from types import ModuleType

import httpx
import jwt
import pytest

from tests.proxy.conftest import REPO_ROOT
from tests.support.proxy_process import free_port
from tests.support.timing import scaled, wait_until
from tests.support.tokens import SECRET


def run(args: list[str], cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items()
             if not k.startswith(("JWT_", "PROXY_", "OLLAMA_", "DATABASE_"))}
    return subprocess.run([sys.executable, "-m", "proxy", *args], cwd=cwd, env={**clean, **env},
                          capture_output=True, text=True, timeout=scaled(60))


def test_help_explains_the_commands(tmp_path: Path) -> None:
    result = run(["--help"], tmp_path)
    assert result.returncode == 0
    for word in ("serve", "token", "migrate", "check-config", ".env.example"):
        assert word in result.stdout


def test_token_is_minted_with_the_configured_secret(tmp_path: Path) -> None:
    result = run(["token", "--sub", "alice", "--role", "admin", "--ttl", "120"], tmp_path,
                 JWT_SECRET=SECRET)
    assert result.returncode == 0, result.stderr
    claims = jwt.decode(result.stdout.strip(), SECRET, algorithms=["HS256"])
    assert claims["sub"] == "alice"
    assert claims["role"] == "admin"
    assert 100 < claims["exp"] - time.time() <= 120


def test_a_token_the_proxy_would_refuse_for_its_lifetime_is_not_minted(tmp_path: Path) -> None:
    result = run(["token", "--sub", "alice", "--ttl", "3601"], tmp_path, JWT_SECRET=SECRET,
                 JWT_MAX_LIFETIME="3600")
    assert result.returncode == 2
    assert result.stdout == ""
    assert "--ttl 3601 is longer than JWT_MAX_LIFETIME (3600 s)" in result.stderr


def test_token_without_a_secret_is_refused(tmp_path: Path) -> None:
    result = run(["token", "--sub", "alice"], tmp_path)
    assert result.returncode == 2
    assert "JWT_SECRET is not set" in result.stderr


def test_migrate_creates_the_schema(tmp_path: Path) -> None:
    db = tmp_path / "m.db"
    result = run(["migrate"], tmp_path, DATABASE_URL=f"sqlite:///{db}")
    assert result.returncode == 0, result.stderr
    import sqlite3
    with sqlite3.connect(db) as conn:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert {"conversations", "messages", "alembic_version"} <= tables


def test_migrate_without_the_database_says_so_not_a_traceback(tmp_path: Path) -> None:
    result = run(["migrate"], tmp_path,
                 DATABASE_URL=f"postgresql://proxy:pw-9d2e@127.0.0.1:{free_port()}/llm")
    assert result.returncode == 1
    assert "cannot reach the database" in result.stderr
    assert "Traceback" not in result.stderr
    assert "pw-9d2e" not in result.stderr


def test_bad_configuration_is_reported_not_a_traceback(tmp_path: Path) -> None:
    result = run(["check-config"], tmp_path, PROXY_PORT="not-a-port")
    assert result.returncode != 0
    assert "configuration error" in result.stderr
    # The variable as the operator sets it, and nothing of the value (it may be a secret).
    assert "  PROXY_PORT: Input should be a valid integer" in result.stderr
    assert "proxy_port" not in result.stderr and "not-a-port" not in result.stderr
    assert "Traceback" not in result.stderr


def test_scripts_run_starts_the_simulator_and_prints_a_working_token(tmp_path: Path) -> None:
    """`scripts/run`'s launcher, from a directory without .env: the simulator as upstream, a dev
    token that works, and a stop request that stops the simulator too."""
    port = free_port()
    clean = {k: v for k, v in os.environ.items()
             if not k.startswith(("JWT_", "PROXY_", "OLLAMA_", "DATABASE_"))}
    process = subprocess.Popen([sys.executable, str(REPO_ROOT / "scripts" / "dev_server.py"),
                                "--port", str(port)],
                               cwd=tmp_path, env=clean, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    upstream = None
    try:
        assert process.stdout is not None
        output = []
        token = None
        deadline = time.monotonic() + scaled(30)
        while time.monotonic() < deadline:
            line = process.stdout.readline()
            output.append(line)
            if line.startswith("  ey"):
                token = line.strip()
            if " mode), upstream " in line:
                upstream = line.rsplit(" ", 1)[1].strip()
            if line.startswith("open "):
                break
        assert token, "".join(output)
        assert upstream and upstream.startswith("http://127.0.0.1:"), "".join(output)
        assert f"http://127.0.0.1:{port}/docs" in "".join(output)
        base = f"http://127.0.0.1:{port}"

        def status() -> httpx.Response | None:
            try:
                return httpx.get(f"{base}/api/llm/status", timeout=scaled(2))
            except httpx.HTTPError:
                return None

        answered = wait_until(status, timeout=10, interval=0.1)
        assert answered.status_code == 200, answered.text
        reply = httpx.post(f"{base}/api/llm/generate",
                           headers={"Authorization": f"Bearer {token}"},
                           json={"model": "llama3.2", "prompt": "hello", "stream": False},
                           timeout=scaled(30))
        assert reply.status_code == 200
        assert reply.json()["response"]
    finally:
        process.terminate()
        process.wait(scaled(15))
    assert process.returncode == 0
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{upstream}/api/version", timeout=scaled(2))


def test_the_proxy_never_starts_an_upstream_itself(tmp_path: Path) -> None:
    """In dev mode without OLLAMA_URL, `python -m proxy serve` points at the default upstream
    and starts nothing: the simulator is a development tool outside the product."""
    result = run(["check-config"], tmp_path)
    assert result.returncode == 0, result.stderr
    assert "http://127.0.0.1:11434" in result.stdout
    help_text = run(["serve", "--help"], tmp_path).stdout
    assert "simulator" not in help_text


def test_check_config_shows_urls_without_their_credentials(tmp_path: Path) -> None:
    result = run(["check-config"], tmp_path,
                 OLLAMA_URL="http://ollama:upstream-pw-9d1e@gpu-host:11434",
                 DATABASE_URL="postgresql://llm:database-pw-5b7c@postgres:5432/llm",
                 REDIS_URL="redis://:redis-pw-2a8f@redis:6379/0")
    assert result.returncode == 0, result.stderr
    for password in ("upstream-pw-9d1e", "database-pw-5b7c", "redis-pw-2a8f"):
        assert password not in result.stdout + result.stderr
    assert "upstream: http://***@gpu-host:11434" in result.stdout
    assert "database: postgresql+asyncpg://***@postgres:5432/llm" in result.stdout
    assert "redis: redis://***@redis:6379/0" in result.stdout


def serve_output(tmp_path: Path, **env: str) -> str:
    """What `serve` prints up to its `open …` line (the proxy is stopped right after)."""
    clean = {k: v for k, v in os.environ.items()
             if not k.startswith(("JWT_", "PROXY_", "OLLAMA_", "DATABASE_"))}
    process = subprocess.Popen(
        [sys.executable, "-m", "proxy", "serve", "--port", str(free_port())],
        cwd=tmp_path, env={**clean, "DATABASE_URL": f"sqlite:///{tmp_path / 'p.db'}", **env},
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    output: list[str] = []
    try:
        assert process.stdout is not None
        deadline = time.monotonic() + scaled(30)
        while time.monotonic() < deadline:
            line = process.stdout.readline()
            if not line:
                break
            output.append(line)
            if line.startswith("open "):
                break
    finally:
        process.terminate()
        process.wait(scaled(15))
    assert any(line.startswith("open ") for line in output), "".join(output)
    return "".join(output)


def test_dev_serve_with_a_configured_secret_prints_no_token(tmp_path: Path) -> None:
    # A token signed with the real JWT_SECRET would work against every proxy sharing that
    # secret, and startup output ends up in logs: only the per-process random secret is safe.
    output = serve_output(tmp_path, JWT_SECRET=SECRET, OLLAMA_URL="http://127.0.0.1:9")
    assert "eyJ" not in output
    assert "python -m proxy token" in output


def _launcher() -> ModuleType:
    spec = importlib.util.spec_from_file_location("dev_server", REPO_ROOT / "scripts" /
                                                  "dev_server.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(("dotenv", "simulator"), [
    ("", True),
    ("PROXY_ENV=dev\n", True),
    ("OLLAMA_URL=http://gpu-host:11434\n", False),
    # A production configuration that is valid on its own: the answer is not an error's.
    ("PROXY_ENV=production\nDATABASE_URL=postgresql://llm@db:5432/llm\n"
     "REDIS_URL=redis://redis:6379/0\nJWT_SECRET=" + "3f9a1c7e5b2d8046" * 4 + "\n", False),
])
def test_the_launcher_reads_dotenv_as_the_proxy_does(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, dotenv: str, simulator: bool) -> None:
    """`scripts/run` starts the simulator only when the proxy, reading the same environment
    and `./.env`, would run in dev mode with no OLLAMA_URL; what `.env` says counts."""
    for name in list(os.environ):
        if name.startswith(("JWT_", "PROXY_", "OLLAMA_", "DATABASE_", "REDIS_")):
            monkeypatch.delenv(name)
    (tmp_path / ".env").write_text(dotenv)
    monkeypatch.chdir(tmp_path)
    assert _launcher().wants_simulator() is simulator
    # The proxy's own command line reads the same file, through the same settings.
    shown = run(["check-config"], tmp_path)
    assert shown.returncode == 0, shown.stderr
    upstream = "http://gpu-host:11434" if "OLLAMA_URL" in dotenv else "http://127.0.0.1:11434"
    assert f"upstream: {upstream}" in shown.stdout
    assert f"mode: {'production' if 'production' in dotenv else 'dev'}" in shown.stdout


def test_the_environment_wins_over_dotenv_for_the_launcher_too(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / ".env").write_text("OLLAMA_URL=http://gpu-host:11434\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PROXY_ENV", "dev")
    monkeypatch.setenv("OLLAMA_URL", "http://other-host:11434")
    assert _launcher().wants_simulator() is False
    (tmp_path / ".env").write_text("PROXY_ENV=production\n")
    monkeypatch.delenv("OLLAMA_URL")
    # The environment's PROXY_ENV=dev overrides the file's production.
    assert _launcher().wants_simulator() is True
