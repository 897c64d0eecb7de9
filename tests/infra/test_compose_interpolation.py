"""docker-compose.yml renders with the secrets set, and refuses, naming the fix, without them."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from infra.compose import ComposeError
from tests.infra.stack_files import (
    COMPOSE,
    COMPOSE_SECRETS,
    GPU_COMPOSE,
    REPO_ROOT,
    rendered,
    validate,
)

ENV_EXAMPLE = REPO_ROOT / ".env.example"


@pytest.mark.parametrize("files", [(COMPOSE,), (COMPOSE, GPU_COMPOSE)], ids=["cpu", "gpu"])
def test_config_is_clean_with_the_secrets_set(files: tuple[Path, ...]) -> None:
    warnings = validate(*files)
    assert warnings == "", f"docker compose config warns: {warnings}"


@pytest.mark.parametrize("missing", sorted(COMPOSE_SECRETS))
@pytest.mark.parametrize("unset", [True, False], ids=["unset", "empty"])
def test_a_missing_secret_stops_compose_and_says_how_to_set_it(missing: str, unset: bool) -> None:
    env = {k: v for k, v in COMPOSE_SECRETS.items() if k != missing}
    if not unset:
        env[missing] = ""  # as .env.example ships it
    with pytest.raises(ComposeError, match=f"set {missing} in .env"):
        validate(env=env)


def test_no_secret_has_a_default_in_the_compose_files() -> None:
    for path in (COMPOSE, GPU_COMPOSE):
        text = path.read_text()
        for variable in COMPOSE_SECRETS:
            for use in re.findall(r"\$\{" + variable + r"[^}]*\}", text):
                assert use.startswith(f"${{{variable}:?"), f"{path.name}: {use} is not required"


def test_env_example_needs_only_the_secrets_filled_in() -> None:
    example = dict(
        line.split("=", 1)
        for line in ENV_EXAMPLE.read_text().splitlines()
        if line and not line.startswith("#")
    )
    for variable in COMPOSE_SECRETS:
        assert example.get(variable) == "", f".env.example must list {variable}, empty"
    with pytest.raises(ComposeError):
        validate(env=example)  # as shipped, it must not start the stack
    assert validate(env={**example, **COMPOSE_SECRETS}) == ""


def test_only_the_proxy_and_the_monitoring_uis_publish_ports() -> None:
    services = rendered(COMPOSE, GPU_COMPOSE)["services"]
    publishing = {name for name, service in services.items() if service.get("ports")}
    assert publishing == {"proxy", "prometheus", "alertmanager", "grafana"}
