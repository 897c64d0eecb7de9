"""The stack role's `.env` carries what docker-compose.yml reads, as the operator set it.

The role finds the compose files' variables itself (filter_plugins/compose_variables.py) and
writes the ones the inventory sets (`stack_<variable in lower case>`, or `stack_env_extra`);
compose's defaults apply to the rest. Here Ansible runs the role's own tasks and template, and the
real `docker compose config` reads the result: the stack it describes must be the one compose
describes with the same values.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from infra.compose import compose_files, variables, with_extended
from proxy.core.settings import Settings
from tests.infra.stack_files import COMPOSE_SECRETS, REPO_ROOT, rendered
from tests.playbooks.ansible_cli import ROLES, HostRun, PlaybookRun, case_hosts, run_per_host
from tests.playbooks.test_gpu_facts import load_plugin
from tests.playbooks.test_stack_secrets import plan_stack, refusals, strong_secrets

pytestmark = pytest.mark.timeout(300)

ROLE = ROLES / "stack"
compose_variables = load_plugin(ROLE / "filter_plugins" / "compose_variables.py")
# A value other than compose's default for every variable that is not a secret.
SETTINGS = {
    "PROXY_PUBLISH_ADDRESS": "127.0.0.1",
    "PROXY_PORT": "18000",
    "PROMETHEUS_BIND": "0.0.0.0",
    "ALERTMANAGER_BIND": "10.0.0.6",
    "ALERTMANAGER_CONFIG": "/etc/llm-stack/alertmanager.yml",
    "GRAFANA_BIND": "10.0.0.5",
    "OLLAMA_MEMORY_LIMIT": "8g",
    "OLLAMA_KEEP_ALIVE": "30m",
    "OLLAMA_NUM_PARALLEL": "4",
    "OLLAMA_MAX_LOADED_MODELS": "2",
    "JWT_AUDIENCE": "llm-users",
    "JWT_ISSUER": "https://id.example.org",
    "PROXY_IMAGE": "registry.example.org/llm-proxy:1.2.3",
    "PROXY_TRUSTED_PROXIES": "172.18.0.1,fd00::/64",
    "PROXY_AUDIT_RETENTION_DAYS": "400",
    "GRAFANA_AUDIT_DB_PASSWORD": "test-audit-reader-password",
    "JWT_MAX_LIFETIME": "3600",
    "JWT_ROLE_CLAIM": "groups",
    "JWT_ADMIN_ROLE": "llm-admins",
    "PROXY_USER_KEYS": "true",
    "PROXY_RATE_LIMIT": "30/minute",
    "PROXY_TOKEN_LIMIT_PER_MINUTE": "1000",
    "PROXY_TOKEN_LIMIT_PER_DAY": "100000",
    "PROXY_UPSTREAMS": '{"upstreams":[{"name":"gpu-3","url":"http://10.0.0.13:11434"}]}',
}

PLAYBOOK = """\
- name: Write the stack role's .env as the role does
  hosts: all
  connection: local
  gather_facts: false
  tasks:
    - name: Gather the values as the role does
      ansible.builtin.include_role:
        name: stack
        tasks_from: env.yml
        public: true
    - name: Render the role's template
      ansible.builtin.template:
        src: {template}
        dest: "{{{{ rendered_env_file }}}}"
        mode: "0600"
"""


def role_variable(name: str) -> str:
    return f"stack_{name.lower()}"


def dummy_secrets() -> dict[str, str]:
    return {role_variable(name): value for name, value in COMPOSE_SECRETS.items()}


def render_env(directory: Path, cases: dict[str, dict[str, Any]]) -> PlaybookRun:
    """The role's `.env` for every case, in one run: a host each, given the case's variables,
    writing directory/<host>.env."""
    playbook = directory / "render-env.yml"
    playbook.write_text(PLAYBOOK.format(template=ROLE / "templates" / "env.j2"))
    hosts = {
        host: {
            "stack_source_dir": str(REPO_ROOT),
            "rendered_env_file": str(directory / f"{host}.env"),
            **variables,
        }
        for host, variables in cases.items()
    }
    return run_per_host(playbook, hosts, directory)


@pytest.fixture(scope="module")
def role_envs(tmp_path_factory: pytest.TempPathFactory) -> PlaybookRun:
    """The `.env` of each case of this module (the dummy secrets, and what the case sets)."""
    renamed = dummy_secrets()
    renamed["stack_metrics_token"] = renamed.pop("stack_proxy_metrics_token")
    return render_env(
        tmp_path_factory.mktemp("role-env"),
        {
            "every-setting": {
                **dummy_secrets(),
                **{role_variable(name): value for name, value in SETTINGS.items()},
            },
            "nothing-set": dummy_secrets(),
            "env-extra": {
                **dummy_secrets(),
                "stack_ollama_keep_alive": "30m",
                "stack_env_extra": {"OLLAMA_KEEP_ALIVE": "1h", "AN_OVERRIDE_FILES_SETTING": "on"},
            },
            "renamed-metrics-token": renamed,
        },
    )


def role_env(runs: PlaybookRun, host: str) -> tuple[dict[str, str], HostRun]:
    """The `.env` the role wrote for `host`, and what the host did."""
    run = runs.on(host)
    assert not run.failed, run.summary()
    env = dict(
        line.split("=", 1)
        for line in Path(run.vars["rendered_env_file"]).read_text().splitlines()
        if line and not line.startswith("#")
    )
    return env, run


def test_the_role_finds_the_variables_compose_finds() -> None:
    files = compose_files(REPO_ROOT, gpu=True)
    by_compose = variables(REPO_ROOT, files)
    # The role reads the files the compose files extend too (vars/main.yml).
    by_role = compose_variables.stack_compose_variables(
        [f.read_text() for f in with_extended(files)])

    assert {
        name: (found["required"], found["default"]) for name, found in by_role.items()
    } == {name: (v.required, v.default) for name, v in by_compose.items()}
    assert all(found["name"] == role_variable(name) for name, found in by_role.items())


def test_every_variable_compose_reads_is_set_through_its_role_variable(
    role_envs: PlaybookRun,
) -> None:
    read = set(variables(REPO_ROOT, compose_files(REPO_ROOT, gpu=False)))
    assert set(SETTINGS) | set(COMPOSE_SECRETS) == read, "SETTINGS must cover every variable"

    env, _ = role_env(role_envs, "every-setting")

    assert env == {**COMPOSE_SECRETS, **SETTINGS}
    assert rendered(env=env) == rendered(env={**COMPOSE_SECRETS, **SETTINGS})


def test_what_the_inventory_leaves_unset_keeps_composes_default(role_envs: PlaybookRun) -> None:
    env, _ = role_env(role_envs, "nothing-set")

    assert env == COMPOSE_SECRETS
    assert rendered(env=env) == rendered(env=COMPOSE_SECRETS)


def test_stack_env_extra_adds_lines_and_wins_over_a_role_variable(role_envs: PlaybookRun) -> None:
    # stack_ollama_keep_alive is 30m, stack_env_extra's OLLAMA_KEEP_ALIVE 1h.
    env, _ = role_env(role_envs, "env-extra")

    assert env["OLLAMA_KEEP_ALIVE"] == "1h"
    assert env["AN_OVERRIDE_FILES_SETTING"] == "on"


def test_the_old_metrics_token_name_still_works_and_says_it_is_deprecated(
    role_envs: PlaybookRun,
) -> None:
    # Given the token as stack_metrics_token, not stack_proxy_metrics_token.
    env, run = role_env(role_envs, "renamed-metrics-token")

    assert env["PROXY_METRICS_TOKEN"] == COMPOSE_SECRETS["PROXY_METRICS_TOKEN"]
    warning = run.task("Warn about renamed stack variables").result["results"][0]["msg"]
    assert warning.startswith("DEPRECATED: stack_metrics_token is now stack_proxy_metrics_token")


REFUSED_TRUSTED_PROXIES = [
    ("*", "every client"),
    ("nginx", "'nginx' is not an IP address or network"),
    ("172.18.0.1/16", "did you mean 172.18.0.0/16"),
]
TRUSTED_PROXIES_HOSTS = case_hosts("trusted-proxies", REFUSED_TRUSTED_PROXIES)


@pytest.fixture(scope="module")
def plans(tmp_path_factory: pytest.TempPathFactory) -> PlaybookRun:
    """The stack play with each refused setting, in one run; each test reads its own host."""
    return plan_stack(
        tmp_path_factory.mktemp("stack-settings"),
        {
            **{
                host: {**strong_secrets(), "stack_proxy_trusted_proxies": value}
                for (value, _), host in TRUSTED_PROXIES_HOSTS.items()
            },
            "negative-audit-retention": {
                **strong_secrets(),
                "stack_proxy_audit_retention_days": "-1",
            },
        },
    )


@pytest.mark.parametrize(("value", "reason"), REFUSED_TRUSTED_PROXIES)
def test_trusted_proxies_the_proxy_would_refuse_stop_the_play(
    plans: PlaybookRun, value: str, reason: str
) -> None:
    run = plans.on(TRUSTED_PROXIES_HOSTS[value, reason])

    assert run.failed
    check = run.task("Fail when a proxy setting would stop the proxy")
    assert check.status == "failed"
    assert "stack_proxy_trusted_proxies (PROXY_TRUSTED_PROXIES)" in check.result["msg"]
    assert reason in check.result["msg"]
    assert not Path(run.vars["stack_dir"]).exists()


def test_a_negative_audit_retention_stops_the_play(plans: PlaybookRun) -> None:
    run = plans.on("negative-audit-retention")

    assert run.failed
    check = run.task("Fail when a proxy setting would stop the proxy")
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
