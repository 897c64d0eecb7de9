"""The stack role refuses to deploy without its secrets, before it changes anything."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.playbooks.ansible_cli import PLAYBOOKS, run_playbook

pytestmark = pytest.mark.timeout(300)

SECRETS = {
    "stack_jwt_secret": "a" * 64,
    "stack_postgres_password": "b" * 48,
    "stack_metrics_token": "c" * 64,
    "stack_grafana_admin_password": "d" * 32,
    "stack_proxy_db_password": "e" * 48,
    "stack_redis_password": "f" * 48,
    "stack_grafana_secret_key": "0" * 64,
}


def inventory(tmp_path: Path) -> Path:
    path = tmp_path / "hosts.yml"
    path.write_text(
        "llm_hosts:\n  hosts:\n    localhost:\n      ansible_connection: local\n"
        "      ansible_python_interpreter: '{{ ansible_playbook_python }}'\n"
    )
    return path


def plan_stack(tmp_path: Path, variables: dict[str, str]) -> object:
    # Check mode, the stack play only: the assertions come first, so nothing is planned either.
    return run_playbook(
        "-i", inventory(tmp_path), PLAYBOOKS / "site.yml", "--check", "--tags", "stack",
        "-e", json.dumps({"stack_dir": str(tmp_path / "stack"), **variables}),
    )  # fmt: skip


def test_a_missing_secret_stops_the_play_naming_the_variable(tmp_path: Path) -> None:
    variables = {k: v for k, v in SECRETS.items() if k != "stack_metrics_token"}

    run = plan_stack(tmp_path, variables)

    assert run.returncode != 0  # type: ignore[attr-defined]
    check = run.task("Fail when a required secret is missing")  # type: ignore[attr-defined]
    failed = [item for item in check.result["results"] if item.get("failed")]
    assert [item["item"]["name"] for item in failed] == ["stack_metrics_token"]
    assert "Ansible Vault" in failed[0]["msg"] and "openssl rand -hex 32" in failed[0]["msg"]
    assert not (tmp_path / "stack").exists()


@pytest.mark.parametrize(
    "variable", ["stack_postgres_password", "stack_proxy_db_password", "stack_redis_password"]
)
def test_a_password_that_would_break_a_url_is_refused(tmp_path: Path, variable: str) -> None:
    run = plan_stack(tmp_path, {**SECRETS, variable: "p@ss/word"})

    assert run.returncode != 0  # type: ignore[attr-defined]
    check = run.task("Fail when a secret cannot be used as it is")  # type: ignore[attr-defined]
    assert check.status == "failed"
    assert variable in check.result["msg"]
    assert "only hold letters, digits and - . _ ~" in check.result["msg"]
    # The message names the rule, never the value.
    assert "p@ss/word" not in json.dumps(check.result)
