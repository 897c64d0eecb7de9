"""The stack role refuses to deploy without its secrets, or with secrets the proxy would refuse,
before it changes anything."""

from __future__ import annotations

import json
import random
import secrets
import string
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from proxy.core.settings import secret_weakness
from tests.playbooks.ansible_cli import PLAYBOOKS, ROLES, PlaybookRun, case_hosts, run_per_host
from tests.playbooks.test_gpu_facts import load_plugin

pytestmark = pytest.mark.timeout(300)

refusals = load_plugin(ROLES / "stack" / "filter_plugins" / "proxy_refusals.py")


def strong_secrets() -> dict[str, str]:
    """Each secret as the documentation says to make it (`openssl rand -hex N`)."""
    return {
        "stack_jwt_secret": secrets.token_hex(32),
        "stack_postgres_password": secrets.token_hex(24),
        "stack_proxy_metrics_token": secrets.token_hex(32),
        "stack_grafana_admin_password": secrets.token_hex(16),
        "stack_proxy_db_password": secrets.token_hex(24),
        "stack_redis_password": secrets.token_hex(24),
        "stack_grafana_secret_key": secrets.token_hex(32),
    }


def plan_stack(directory: Path, cases: dict[str, dict[str, Any]]) -> PlaybookRun:
    """The stack play of site.yml in check mode, once for every case: a host each, with the
    case's variables and its own stack_dir (directory/<host>/stack). The assertions come first,
    so a refused case plans nothing either."""
    hosts = {
        host: {"stack_dir": str(directory / host / "stack"), **variables}
        for host, variables in cases.items()
    }
    return run_per_host(PLAYBOOKS / "site.yml", hosts, directory, "--check", "--tags", "stack")


URL_BREAKERS = ["stack_postgres_password", "stack_proxy_db_password", "stack_redis_password"]
WEAK_SECRETS = [
    ("stack_jwt_secret", "JWT_SECRET", "a" * 64, "is too predictable for production"),
    ("stack_jwt_secret", "JWT_SECRET", "abcdefgh" * 6, "is too predictable for production"),
    ("stack_jwt_secret", "JWT_SECRET", "changeme", "is a placeholder value"),
    ("stack_proxy_metrics_token", "PROXY_METRICS_TOKEN", "0123456789" * 4, "too predictable"),
    ("stack_proxy_metrics_token", "PROXY_METRICS_TOKEN", "Secret", "is a placeholder value"),
    ("stack_redis_password", "REDIS_PASSWORD", "redis" * 8, "too predictable"),
    ("stack_proxy_db_password", "PROXY_DB_PASSWORD", "0a1b2c3d4e5f", "12 bytes, need at least"),
    ("stack_grafana_secret_key", "GRAFANA_SECRET_KEY", "0" * 64, "too predictable"),
    ("stack_postgres_password", "POSTGRES_PASSWORD", "hunter2", "7 bytes, need at least 32"),
]
WEAK_HOSTS = case_hosts("weak", WEAK_SECRETS)


@pytest.fixture(scope="module")
def plans(tmp_path_factory: pytest.TempPathFactory) -> PlaybookRun:
    """Every case of this module, planned in one run; each test reads its own host."""
    missing = {k: v for k, v in strong_secrets().items() if k != "stack_proxy_metrics_token"}
    return plan_stack(
        tmp_path_factory.mktemp("stack-secrets"),
        {
            "missing-metrics-token": missing,
            **{f"url-{name}": {**strong_secrets(), name: "p@ss/word"} for name in URL_BREAKERS},
            "documented": strong_secrets(),
            **{
                host: {**strong_secrets(), variable: value}
                for (variable, _, value, _), host in WEAK_HOSTS.items()
            },
            "grafana-admin-hex16": {**strong_secrets(), "stack_grafana_admin_password": "0" * 16},
        },
    )


def test_a_missing_secret_stops_the_play_naming_the_variable(plans: PlaybookRun) -> None:
    run = plans.on("missing-metrics-token")

    assert run.failed
    check = run.task("Fail when a required secret is missing")
    failed = [item for item in check.result["results"] if item.get("failed")]
    assert [item["item"]["name"] for item in failed] == ["stack_proxy_metrics_token"]
    assert "Ansible Vault" in failed[0]["msg"] and "openssl rand -hex 32" in failed[0]["msg"]
    assert not Path(run.vars["stack_dir"]).exists()


@pytest.mark.parametrize("variable", URL_BREAKERS)
def test_a_password_that_would_break_a_url_is_refused(plans: PlaybookRun, variable: str) -> None:
    run = plans.on(f"url-{variable}")

    assert run.failed
    check = run.task("Fail when a secret cannot be used as it is")
    assert check.status == "failed"
    assert variable in check.result["msg"]
    assert "only hold letters, digits and - . _ ~" in check.result["msg"]
    # The message names the rule, never the value.
    assert "p@ss/word" not in json.dumps(check.result)


def test_secrets_made_as_documented_pass_every_check(plans: PlaybookRun) -> None:
    run = plans.on("documented")

    for check in (
        "Fail when a required secret is missing",
        "Fail when a secret cannot be used as it is",
        "Fail when a secret is too weak for production",
        "Fail when a proxy setting would stop the proxy",
    ):
        assert run.task(check).status == "ok", run.summary()


@pytest.mark.parametrize(("variable", "environment", "value", "reason"), WEAK_SECRETS)
def test_a_secret_the_proxy_would_refuse_stops_the_play(
    plans: PlaybookRun, variable: str, environment: str, value: str, reason: str
) -> None:
    run = plans.on(WEAK_HOSTS[variable, environment, value, reason])

    assert run.failed
    check = run.task("Fail when a secret is too weak for production")
    failed = [item for item in check.result["results"] if item.get("failed")]
    assert [item["item"]["name"] for item in failed] == [variable]
    message = failed[0]["msg"]
    assert f"{variable}: {environment} " in message and reason in message, message
    assert "openssl rand -hex 32" in message and "Ansible Vault" in message
    # The message names the rule, never the value.
    assert value not in json.dumps(check.result)
    assert not Path(run.vars["stack_dir"]).exists()


def test_grafanas_admin_password_is_not_held_to_the_key_rule(plans: PlaybookRun) -> None:
    # A login password documented as `openssl rand -hex 16`: 32 hex characters are estimated
    # below the 128 bits asked of keys, and Grafana, not the proxy, decides what it accepts.
    run = plans.on("grafana-admin-hex16")

    check = run.task("Fail when a secret is too weak for production")
    assert check.status == "ok", run.summary()


def _random(alphabet: str, length: int) -> Callable[[], str]:
    return lambda: "".join(random.choice(alphabet) for _ in range(length))


# Values on both sides of every rule; the random ones are drawn inside the test.
CANDIDATES: list[Callable[[], str]] = [
    *(lambda value=value: value for value in (
        "", "changeme", " Secret ", "PLEASE-CHANGE-ME", "change-me ", "a" * 31, "a" * 32,
        "a" * 64, "ab" * 32, "password" * 4, "abcdefgh" * 6, "0123456789" * 4,
        "0123456789abcdef" * 2, "0123456789abcdef" * 4, "Password123Password123Password123",
        "correct horse battery staple, again", "\u00e9" * 16, "\u00e9t\u00e9" * 11,
        string.printable[:64], string.ascii_letters + string.digits,
    )),
    lambda: secrets.token_hex(12),
    lambda: secrets.token_hex(16),
    lambda: secrets.token_hex(24),
    lambda: secrets.token_hex(32),
    lambda: secrets.token_urlsafe(32),
    _random("ab", 64),
    _random("abcd", 64),
    _random(string.digits, 40),
    _random(string.digits, 80),
    _random(string.ascii_lowercase + string.digits, 48),
]  # fmt: skip


@pytest.mark.parametrize("candidate", CANDIDATES)
@pytest.mark.parametrize("environment", ["JWT_SECRET", "REDIS_PASSWORD"])
def test_the_roles_rule_is_the_proxys_rule(
    candidate: Callable[[], str], environment: str
) -> None:
    # The role carries its own copy (it must not need the proxy's code on the controller):
    # the same verdict and the same words for every value, or this fails.
    for _ in range(5):
        value = candidate()
        assert refusals.secret_weakness(environment, value) == secret_weakness(
            environment, value
        ), repr(value)
