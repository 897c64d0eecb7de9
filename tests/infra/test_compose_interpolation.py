"""docker-compose.yml renders with the secrets set, and refuses, naming the fix, without them."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.infra.compose_render import COMPOSE_FILE, GPU_COMPOSE_FILE, ComposeResult
from tests.infra.mocked_program import COMPOSE_SECRETS, REPO_ROOT

Compose = Callable[..., ComposeResult]
ENV_EXAMPLE = REPO_ROOT / ".env.example"


@pytest.mark.parametrize(
    "files", [(COMPOSE_FILE,), (COMPOSE_FILE, GPU_COMPOSE_FILE)], ids=["cpu", "gpu"]
)
def test_config_is_clean_with_the_secrets_set(compose: Compose, files: tuple[Path, ...]) -> None:
    result = compose(*files, args=("-q",))
    assert result.returncode == 0, result.stderr
    assert result.stderr == "", f"docker-compose config warns: {result.stderr}"


@pytest.mark.parametrize("missing", sorted(COMPOSE_SECRETS))
@pytest.mark.parametrize("unset", [True, False], ids=["unset", "empty"])
def test_a_missing_secret_stops_compose_and_says_how_to_set_it(
    compose: Compose, missing: str, unset: bool
) -> None:
    env = {k: v for k, v in COMPOSE_SECRETS.items() if k != missing}
    if not unset:
        env[missing] = ""  # as .env.example ships it
    result = compose(env=env, args=("-q",))
    assert result.returncode != 0, f"compose accepted the stack without {missing}"
    assert f"set {missing} in .env" in result.stderr, result.stderr


def test_no_secret_has_a_default_in_the_compose_files() -> None:
    for path in (COMPOSE_FILE, GPU_COMPOSE_FILE):
        text = path.read_text()
        for variable in COMPOSE_SECRETS:
            for use in re.findall(r"\$\{" + variable + r"[^}]*\}", text):
                assert use.startswith(f"${{{variable}:?"), f"{path.name}: {use} is not required"


def test_env_example_needs_only_the_secrets_filled_in(compose: Compose) -> None:
    example = dict(
        line.split("=", 1)
        for line in ENV_EXAMPLE.read_text().splitlines()
        if line and not line.startswith("#")
    )
    for variable in COMPOSE_SECRETS:
        assert example.get(variable) == "", f".env.example must list {variable}, empty"
    as_shipped = compose(env=example, args=("-q",))
    assert as_shipped.returncode != 0, ".env.example as shipped must not start the stack"
    filled = compose(env={**example, **COMPOSE_SECRETS}, args=("-q",))
    assert filled.returncode == 0, filled.stderr


def test_only_the_proxy_prometheus_and_grafana_publish_ports(compose: Compose) -> None:
    services = compose(COMPOSE_FILE, GPU_COMPOSE_FILE).json()["services"]
    publishing = {name for name, service in services.items() if service.get("ports")}
    assert publishing == {"proxy", "prometheus", "grafana"}
