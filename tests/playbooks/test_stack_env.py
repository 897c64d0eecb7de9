"""The stack role's `.env` carries what docker-compose.yml reads, with the same defaults.

The role writes `.env` from its variables (templates/env.j2); compose turns it into the services'
environment. Here Ansible renders the real template with the role's defaults (and with operator
values), and the real `docker-compose config` reads the result: the stack it describes must be
the one compose describes by itself with the same settings (tests/infra's drift test holds the
Pulumi program against compose the same way).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from pydantic import ValidationError

from proxy.core.settings import Settings
from tests.infra.compose_render import COMPOSE_FILE, GPU_COMPOSE_FILE, render
from tests.infra.mocked_program import COMPOSE_SECRETS
from tests.infra.test_pulumi_compose_drift import SETTINGS
from tests.playbooks.ansible_cli import ROLES, run_playbook
from tests.playbooks.test_stack_secrets import plan_stack, refusals, strong_secrets

pytestmark = pytest.mark.timeout(300)

ROLE = ROLES / "stack"
# The role variable behind each secret compose requires.
SECRET_VARIABLES = {
    "JWT_SECRET": "stack_jwt_secret",
    "POSTGRES_PASSWORD": "stack_postgres_password",
    "PROXY_DB_PASSWORD": "stack_proxy_db_password",
    "REDIS_PASSWORD": "stack_redis_password",
    "PROXY_METRICS_TOKEN": "stack_metrics_token",
    "GRAFANA_ADMIN_PASSWORD": "stack_grafana_admin_password",
    "GRAFANA_SECRET_KEY": "stack_grafana_secret_key",
}
# The role variable behind each operator setting of the drift test's table.
SETTING_VARIABLES = {
    "PROXY_PUBLISH_ADDRESS": "stack_proxy_publish_address",
    "PROXY_PORT": "stack_proxy_port",
    "PROMETHEUS_BIND": "stack_prometheus_bind",
    "GRAFANA_BIND": "stack_grafana_bind",
    "OLLAMA_MEMORY_LIMIT": "stack_ollama_memory_limit",
    "OLLAMA_KEEP_ALIVE": "stack_ollama_keep_alive",
    "OLLAMA_NUM_PARALLEL": "stack_ollama_num_parallel",
    "OLLAMA_MAX_LOADED_MODELS": "stack_ollama_max_loaded_models",
    "JWT_AUDIENCE": "stack_jwt_audience",
    "JWT_ISSUER": "stack_jwt_issuer",
    "PROXY_IMAGE": "stack_proxy_image",
    "PROXY_TRUSTED_PROXIES": "stack_proxy_trusted_proxies",
    "PROXY_AUDIT_RETENTION_DAYS": "stack_proxy_audit_retention_days",
}
# Read by compose but left to `stack_env_extra`: optional, and only Grafana's per-user panels
# need it (README, "Monitoring").
NOT_WRITTEN = {"GRAFANA_AUDIT_DB_PASSWORD"}

PLAYBOOK = """\
- name: Write the stack role's .env as the role does
  hosts: localhost
  connection: local
  gather_facts: false
  vars:
    ansible_python_interpreter: "{{{{ ansible_playbook_python }}}}"
  vars_files:
    - {defaults}
  tasks:
    - name: Render the role's template
      ansible.builtin.template:
        src: {template}
        dest: {dest}
        mode: "0600"
"""


def role_env(tmp_path: Path, **variables: str) -> dict[str, str]:
    """The `.env` the role writes with its defaults, the dummy secrets and `variables`."""
    dest = tmp_path / "role.env"
    playbook = tmp_path / "render-env.yml"
    playbook.write_text(
        PLAYBOOK.format(
            defaults=ROLE / "defaults" / "main.yml", template=ROLE / "templates" / "env.j2",
            dest=dest,
        )
    )  # fmt: skip
    secrets = {SECRET_VARIABLES[name]: value for name, value in COMPOSE_SECRETS.items()}
    run = run_playbook("-i", "localhost,", playbook, "-e", json.dumps({**secrets, **variables}))
    assert run.returncode == 0, run.summary()
    return dict(
        line.split("=", 1)
        for line in dest.read_text().splitlines()
        if line and not line.startswith("#")
    )


def rendered(tmp_path: Path, env: dict[str, str]) -> dict[str, object]:
    return render(tmp_path, env=env).json()


def test_every_variable_compose_reads_is_written_by_the_role(tmp_path: Path) -> None:
    read = {
        name
        for path in (COMPOSE_FILE, GPU_COMPOSE_FILE)
        for name in re.findall(r"\$\{(\w+)", path.read_text())
    }
    written = set(role_env(tmp_path))

    assert read - written == NOT_WRITTEN, "compose reads variables the stack role never sets"
    assert written - read == set(), "the stack role writes variables compose never reads"


def test_the_roles_defaults_are_composes_defaults(tmp_path: Path) -> None:
    assert rendered(tmp_path, role_env(tmp_path)) == rendered(tmp_path, COMPOSE_SECRETS)


def test_operator_settings_reach_the_stack_as_compose_reads_them(tmp_path: Path) -> None:
    settings = {variable: value for variable, _, value in SETTINGS}
    assert set(SETTING_VARIABLES) == set(settings) - NOT_WRITTEN, "a setting has no role variable"

    env = role_env(
        tmp_path, **{SETTING_VARIABLES[name]: settings[name] for name in SETTING_VARIABLES}
    )

    assert {name: env.get(name) for name in SETTING_VARIABLES} == {
        name: settings[name] for name in SETTING_VARIABLES
    }
    expected = {**COMPOSE_SECRETS, **{name: settings[name] for name in SETTING_VARIABLES}}
    assert rendered(tmp_path, env) == rendered(tmp_path, expected)


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("*", "every client"),
        ("nginx", "'nginx' is not an IP address or network"),
        ("172.18.0.1/16", "did you mean 172.18.0.0/16"),
    ],
)
def test_trusted_proxies_the_proxy_would_refuse_stop_the_play(
    tmp_path: Path, value: str, reason: str
) -> None:
    run = plan_stack(tmp_path, {**strong_secrets(), "stack_proxy_trusted_proxies": value})

    assert run.returncode != 0  # type: ignore[attr-defined]
    check = run.task("Fail when a proxy setting would stop the proxy")  # type: ignore[attr-defined]
    assert check.status == "failed"
    assert "stack_proxy_trusted_proxies (PROXY_TRUSTED_PROXIES)" in check.result["msg"]
    assert reason in check.result["msg"]
    assert not (tmp_path / "stack").exists()


def test_a_negative_audit_retention_stops_the_play(tmp_path: Path) -> None:
    run = plan_stack(tmp_path, {**strong_secrets(), "stack_proxy_audit_retention_days": "-1"})

    assert run.returncode != 0  # type: ignore[attr-defined]
    check = run.task("Fail when a proxy setting would stop the proxy")  # type: ignore[attr-defined]
    assert check.status == "failed"
    assert "stack_proxy_audit_retention_days (PROXY_AUDIT_RETENTION_DAYS)" in check.result["msg"]
    assert "0 keeps every row" in check.result["msg"]


@pytest.mark.parametrize(
    "value",
    [
        "", " ", "172.18.0.1", "172.18.0.1, 10.0.0.0/8", "fd00::/64", "::1", ",10.0.0.1,",
        "*", "10.0.0.1,*", "nginx", "localhost", "172.18.0.1/16", "fd00::1/64", "10.0.0.300",
        "10.0.0.0/33",
    ],
)
def test_the_roles_trusted_proxies_rule_is_the_proxys_rule(value: str) -> None:
    reason = refusals.trusted_proxies_problem(value)
    try:
        Settings(_env_file=None, proxy_trusted_proxies=value)  # type: ignore[call-arg]
    except ValidationError as refused:
        assert reason is not None, f"the proxy refuses {value!r}, the role lets it pass"
        assert f"PROXY_TRUSTED_PROXIES: {reason}" in str(refused)
    else:
        assert reason is None, f"the role refuses {value!r}, which the proxy accepts"
