"""The repository's compose files, rendered by the program's own `docker compose config` runner
(infra/compose.py), and the dummy secrets every test renders and deploys them with."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from infra.compose import COMPOSE_FILE, GPU_COMPOSE_FILE, render, run
from infra.config import config_key

REPO_ROOT = Path(__file__).resolve().parents[2]
COMPOSE = REPO_ROOT / COMPOSE_FILE
GPU_COMPOSE = REPO_ROOT / GPU_COMPOSE_FILE
PROJECT = "llm-stack"

# What compose requires, under its variable; Pulumi's keys are their camelCase.
COMPOSE_SECRETS = {
    "JWT_SECRET": "test-jwt-secret-0123456789abcdef0123456789abcdef",
    "POSTGRES_PASSWORD": "test-postgres-password-0123456789",
    "GRAFANA_ADMIN_PASSWORD": "test-grafana-password-0123456789",
    "PROXY_METRICS_TOKEN": "test-metrics-token-0123456789abcdef",
    "PROXY_DB_PASSWORD": "test-proxy-db-password-0123456789",
    "REDIS_PASSWORD": "test-redis-password-0123456789",
    "GRAFANA_SECRET_KEY": "test-grafana-secret-key-0123456789abcdef",
}
PULUMI_SECRETS = {config_key(name): value for name, value in COMPOSE_SECRETS.items()}


def rendered(
    *files: Path, env: dict[str, str] | None = None, root: Path = REPO_ROOT
) -> dict[str, Any]:
    """`docker compose config` of `files` (default: docker-compose.yml) with `env` (default: the
    dummy secrets) as its only variables."""
    return render(root, files or (root / COMPOSE_FILE,), PROJECT,
                  COMPOSE_SECRETS if env is None else env)  # fmt: skip


def validate(*files: Path, env: dict[str, str] | None = None) -> str:
    """`docker compose config -q`'s warnings; infra.compose.ComposeError with compose's message
    when it refuses."""
    env = COMPOSE_SECRETS if env is None else env
    return run(REPO_ROOT, files or (COMPOSE,), "-q", env=env).stderr
