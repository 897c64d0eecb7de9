"""The fast tier's settings come from the test alone: what a developer's shell exports for a
proxy of their own (PROXY_*, JWT_*, OLLAMA_*, DATABASE_URL, REDIS_URL, a `.env` file) changes
nothing a test runs against."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.proxy_app import proxy_settings
from tests.support.tokens import SECRET


def test_the_environment_and_a_dotenv_file_do_not_leak_in(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in {"PROXY_RATE_LIMIT": "1/minute", "PROXY_ENV": "production",
                        "JWT_SECRET": "the-developer-s-own-secret-" + "d" * 20,
                        "OLLAMA_URL": "http://developer-ollama:11434",
                        "DATABASE_URL": "postgresql://dev@127.0.0.1:5432/dev",
                        "REDIS_URL": "redis://127.0.0.1:6379/9"}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".env").write_text("PROXY_CONCURRENCY_LIMIT=1\nJWT_AUDIENCE=someone-else\n")

    settings = proxy_settings(tmp_path, ollama_url="http://127.0.0.1:1")

    assert settings.proxy_rate_limit == "100000/minute"
    assert settings.proxy_env == "dev"
    assert settings.jwt_secret == SECRET
    assert settings.ollama_url == "http://127.0.0.1:1"
    assert settings.database_url == f"sqlite+aiosqlite:///{tmp_path / 'proxy.db'}"
    assert settings.redis_url is None
    assert settings.proxy_concurrency_limit == 50
    assert settings.jwt_audience is None
