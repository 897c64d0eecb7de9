"""PROXY_ENV=production refuses what is only fit for development, naming the variable to set.

Most tests build `Settings` in process from a clean environment (milliseconds each); one runs
`serve` to prove the refusal is a short `configuration error`, not a traceback; one renders the
real docker-compose.yml with secrets generated the way its messages say (`openssl rand -hex`)
and checks the proxy would accept what it is given.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from pydantic import ValidationError

from proxy.core.settings import Settings, secret_weakness
from tests.support.timing import scaled

OWN_PREFIXES = ("JWT_", "PROXY_", "OLLAMA_", "DATABASE_", "REDIS_")


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.upper().startswith(OWN_PREFIXES):
            monkeypatch.delenv(name)


def production(**overrides: Any) -> dict[str, Any]:
    """A configuration like the stack's, with fresh secrets; `overrides` change one part."""
    values: dict[str, Any] = {
        "proxy_env": "production",
        "jwt_secret": secrets.token_hex(32),
        "proxy_metrics_token": secrets.token_hex(32),
        "database_url": f"postgresql://llm:{secrets.token_hex(24)}@postgres:5432/llm",
        "redis_url": "redis://redis:6379/0",
    }
    values.update(overrides)
    return {k: v for k, v in values.items() if v is not None}


def refusal(**overrides: Any) -> str:
    with pytest.raises(ValidationError) as caught:
        Settings(_env_file=None, **production(**overrides))  # type: ignore[call-arg]
    return str(caught.value)


def public_key_pem() -> str:
    key = ec.generate_private_key(ec.SECP256R1()).public_key()
    return key.public_bytes(serialization.Encoding.PEM,
                            serialization.PublicFormat.SubjectPublicKeyInfo).decode()


def test_the_stack_configuration_is_accepted() -> None:
    settings = Settings(_env_file=None, **production())  # type: ignore[call-arg]
    assert settings.proxy_env == "production"


def test_secrets_from_openssl_rand_hex_32_always_pass() -> None:
    for _ in range(20_000):
        value = secrets.token_hex(32)
        assert secret_weakness("JWT_SECRET", value) is None, value
    openssl = shutil.which("openssl")
    made = [subprocess.run([openssl, "rand", "-hex", "32"], capture_output=True, text=True,
                           check=True).stdout.strip() for _ in range(10)] if openssl else []
    for value in [secrets.token_hex(32), *made]:
        Settings(_env_file=None,  # type: ignore[call-arg]
                 **production(jwt_secret=value, proxy_metrics_token=value))


@pytest.mark.parametrize(("secret", "message"), [
    ("a" * 32, "JWT_SECRET is too predictable"),
    ("p" * 40, "JWT_SECRET is too predictable"),
    ("abcdefgh" * 6, "JWT_SECRET is too predictable"),
    ("Password123Password123Password123", "JWT_SECRET is too predictable"),
    ("0123456789" * 4, "JWT_SECRET is too predictable"),
    ("changeme", "JWT_SECRET is a placeholder"),
    ("short-but-random-9f3k", "JWT_SECRET is too short"),
])
def test_a_weak_jwt_secret_is_refused(secret: str, message: str) -> None:
    assert message in refusal(jwt_secret=secret)


@pytest.mark.parametrize("token", ["x", "a" * 64, "metrics"])
def test_a_weak_metrics_token_is_refused(token: str) -> None:
    text = refusal(proxy_metrics_token=token)
    assert "PROXY_METRICS_TOKEN is" in text
    assert "openssl rand -hex 32" in text


def test_no_metrics_token_is_allowed_it_only_closes_metrics() -> None:
    Settings(_env_file=None, **production(proxy_metrics_token=None))  # type: ignore[call-arg]


@pytest.mark.parametrize("missing", ["jwt_audience", "jwt_issuer"])
def test_asymmetric_tokens_need_an_audience_and_an_issuer(missing: str) -> None:
    bound = {"jwt_audience": "llm-proxy", "jwt_issuer": "https://idp.example"}
    text = refusal(jwt_algorithms="RS256", jwt_secret=None, jwt_public_key=public_key_pem(),
                   **{**bound, missing: None})
    assert f"{missing.upper()} is not set" in text
    accepted = Settings(_env_file=None,  # type: ignore[call-arg]
                        **production(jwt_algorithms="ES256", jwt_secret=None,
                                     jwt_public_key=public_key_pem(), **bound))
    assert accepted.jwt_audience == "llm-proxy"


@pytest.mark.parametrize("url", ["http://idp.example/.well-known/jwks.json",
                                 "file:///etc/jwks.json"])
def test_a_jwks_url_must_be_https(url: str) -> None:
    text = refusal(jwt_algorithms="RS256", jwt_secret=None, jwt_jwks_url=url,
                   jwt_audience="llm-proxy", jwt_issuer="https://idp.example")
    assert "JWT_JWKS_URL must be an https:// URL" in text
    Settings(_env_file=None,  # type: ignore[call-arg]
             **production(jwt_algorithms="RS256", jwt_secret=None,
                          jwt_jwks_url="https://idp.example/.well-known/jwks.json",
                          jwt_audience="llm-proxy", jwt_issuer="https://idp.example"))


def test_sqlite_or_no_database_url_is_refused() -> None:
    assert "DATABASE_URL must point at PostgreSQL" in refusal(database_url="sqlite:///./p.db")
    values = production()
    del values["database_url"]
    with pytest.raises(ValidationError) as caught:
        Settings(_env_file=None, **values)  # type: ignore[call-arg]
    assert "DATABASE_URL is not set" in str(caught.value)


def test_in_memory_limits_are_refused() -> None:
    assert "REDIS_URL is not set" in refusal(redis_url=None)


def test_every_problem_is_reported_at_once() -> None:
    text = refusal(jwt_secret="a" * 40, proxy_metrics_token="x", database_url="sqlite:///x.db",
                   redis_url=None)
    for variable in ("JWT_SECRET", "PROXY_METRICS_TOKEN", "DATABASE_URL", "REDIS_URL"):
        assert variable in text


def test_dev_mode_keeps_its_embedded_defaults() -> None:
    settings = Settings(_env_file=None, proxy_env="dev", jwt_secret="a" * 8)  # type: ignore[call-arg]
    assert settings.is_sqlite
    assert settings.redis_url is None


def test_serve_refuses_with_a_configuration_error_not_a_traceback(tmp_path: Path) -> None:
    clean = {k: v for k, v in os.environ.items() if not k.upper().startswith(OWN_PREFIXES)}
    env = {**clean, "PROXY_ENV": "production", "JWT_SECRET": "a" * 32,
           "PROXY_METRICS_TOKEN": "m", "JWT_JWKS_URL": "http://idp.example/jwks.json",
           "JWT_ALGORITHMS": "HS256,RS256"}
    result = subprocess.run([sys.executable, "-m", "proxy", "serve", "--port", "1"],
                            cwd=tmp_path, env=env, capture_output=True, text=True,
                            timeout=scaled(60))
    assert result.returncode != 0
    assert result.stderr.startswith("configuration error")
    assert "Traceback" not in result.stderr
    for variable in ("JWT_SECRET", "PROXY_METRICS_TOKEN", "JWT_AUDIENCE", "JWT_ISSUER",
                     "JWT_JWKS_URL", "DATABASE_URL", "REDIS_URL"):
        assert variable in result.stderr, variable


def test_docker_compose_gives_the_proxy_a_valid_production_configuration(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.infra.stack_files import COMPOSE_SECRETS, rendered

    # Every secret the stack requires, made as docker-compose.yml's own messages tell the
    # operator to make them (`openssl rand -hex N`).
    stack_secrets = {name: secrets.token_hex(32) for name in COMPOSE_SECRETS}
    services = rendered(env=stack_secrets)["services"]
    environment = services["proxy"]["environment"]
    assert environment["PROXY_ENV"] == "production"
    for name, value in environment.items():
        monkeypatch.setenv(name, "" if value is None else str(value))
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    assert settings.proxy_env == "production"
    assert settings.redis_url
    assert not settings.is_sqlite
