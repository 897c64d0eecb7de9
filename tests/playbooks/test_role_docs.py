"""Each role's public API is documented where an operator looks: argument_specs and the README."""

from __future__ import annotations

import re

import pytest
import yaml

from tests.playbooks.ansible_cli import PLAYBOOKS, ROLES

ROLE_NAMES = sorted(path.name for path in ROLES.iterdir() if (path / "defaults").is_dir())
README = (PLAYBOOKS / "README.md").read_text()
# The required secrets have no default on purpose; they are documented all the same.
NO_DEFAULT = {
    "stack_jwt_secret",
    "stack_postgres_password",
    "stack_proxy_db_password",
    "stack_redis_password",
    "stack_proxy_metrics_token",
    "stack_grafana_admin_password",
    "stack_grafana_secret_key",
}


def defaults(role: str) -> set[str]:
    return set(yaml.safe_load((ROLES / role / "defaults" / "main.yml").read_text()) or {})


def specified(role: str) -> set[str]:
    specs = yaml.safe_load((ROLES / role / "meta" / "argument_specs.yml").read_text())
    return set(specs["argument_specs"]["main"]["options"])


def documented(role: str) -> set[str]:
    section = README.split(f"### {role}\n", 1)[1].split("\n### ", 1)[0]
    return set(re.findall(r"^\| `(\w+)` \|", section, re.MULTILINE))


def test_the_roles_are_the_seven_of_site_yml() -> None:
    assert ROLE_NAMES == ["docker", "engine", "firewall", "models", "nvidia", "stack", "verify"]


@pytest.mark.parametrize("role", ROLE_NAMES)
def test_every_variable_is_prefixed_specified_and_in_the_readme(role: str) -> None:
    public = defaults(role) | (NO_DEFAULT if role == "stack" else set())

    assert all(name.startswith(f"{role}_") for name in public), public
    assert specified(role) == public
    assert documented(role) == public


def test_no_secret_has_a_default() -> None:
    assert not NO_DEFAULT & defaults("stack")
