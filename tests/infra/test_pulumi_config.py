"""`infra/config.py`: the stack config keys derived from compose's variables, their validation,
and the example stack config listing exactly those keys."""

from __future__ import annotations

import json
import re
from collections.abc import Callable

import pytest
import yaml

from infra.compose import compose_files, with_extended
from infra.config import (
    MIB,
    PULUMI_KEYS,
    VALIDATORS,
    ConfigError,
    Key,
    check_setting,
    compose_keys,
    config_key,
    memory_bytes,
)
from tests.infra.pulumi_mocks import Deployment
from tests.infra.stack_files import COMPOSE_SECRETS, PROJECT, PULUMI_SECRETS, REPO_ROOT

EXAMPLE = REPO_ROOT / "infra" / "Pulumi.dev.example.yaml"


@pytest.fixture(scope="module")
def keys() -> dict[str, Key]:
    # Both files: a GPU host's keys are the superset.
    return dict(compose_keys(REPO_ROOT, compose_files(REPO_ROOT, gpu=True)).keys)


@pytest.mark.parametrize(
    ("variable", "key"),
    [
        ("OLLAMA_MEMORY_LIMIT", "ollamaMemoryLimit"),
        ("JWT_SECRET", "jwtSecret"),
        ("PROXY_DB_PASSWORD", "proxyDbPassword"),
        ("PROXY_METRICS_TOKEN", "proxyMetricsToken"),
        ("GRAFANA_AUDIT_DB_PASSWORD", "grafanaAuditDbPassword"),
    ],
)
def test_a_key_is_the_camel_case_of_its_variable(variable: str, key: str) -> None:
    assert config_key(variable) == key


def test_the_keys_are_composes_variables(keys: dict[str, Key]) -> None:
    variables = {
        name
        for path in with_extended(compose_files(REPO_ROOT, gpu=True))
        for name in re.findall(r"\$\{(\w+)", path.read_text())
    }
    assert set(keys) == {config_key(name) for name in variables}


def test_what_compose_requires_is_a_secret_key_and_so_are_passwords(
    keys: dict[str, Key],
) -> None:
    secret = {name for name, key in keys.items() if key.secret}
    required = {name for name, key in keys.items() if key.variable.required}
    assert required == set(PULUMI_SECRETS)
    # The optional Grafana reader password is a secret too, by its name.
    assert secret == set(PULUMI_SECRETS) | {"grafanaAuditDbPassword"}


def test_every_validated_variable_is_one_compose_reads(keys: dict[str, Key]) -> None:
    assert {config_key(name) for name in VALIDATORS} <= set(keys)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("12g", 12 * 1024 * MIB),
        ("12G", 12 * 1024 * MIB),
        ("8192m", 8192 * MIB),
        ("512mb", 512 * MIB),
        ("1048576k", 1024 * MIB),
        (str(2 * MIB), 2 * MIB),
    ],
)
def test_memory_sizes_read_as_compose_reads_them(value: str, expected: int) -> None:
    assert memory_bytes(value) == expected


@pytest.mark.parametrize("value", ["", "lots", "1.5g", "0", "1000k", "-1g"])
def test_memory_sizes_docker_cannot_take_are_refused(value: str) -> None:
    with pytest.raises(ConfigError, match="^ollamaMemoryLimit: "):
        check_setting("OLLAMA_MEMORY_LIMIT", value)


@pytest.mark.parametrize("value", ["", "172.18.0.1", "172.18.0.1, 10.0.0.0/8", "fd00::/64"])
def test_trusted_proxies_the_proxy_accepts_pass(value: str) -> None:
    check_setting("PROXY_TRUSTED_PROXIES", value)


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("*", "every client"),
        ("nginx", "'nginx' is not an IP address or network"),
        ("172.18.0.1/16", "did you mean 172.18.0.0/16"),
        ("10.0.0.1,,bogus", "'bogus' is not an IP address"),
    ],
)
def test_trusted_proxies_the_proxy_would_refuse_stop_the_program(value: str, reason: str) -> None:
    with pytest.raises(ConfigError, match="^proxyTrustedProxies: ") as refused:
        check_setting("PROXY_TRUSTED_PROXIES", value)
    assert reason in str(refused.value)


def test_a_negative_audit_retention_stops_the_program() -> None:
    check_setting("PROXY_AUDIT_RETENTION_DAYS", "0")
    with pytest.raises(ConfigError, match="proxyAuditRetentionDays: -1 .*0 keeps every row"):
        check_setting("PROXY_AUDIT_RETENTION_DAYS", "-1")
    with pytest.raises(ConfigError, match="proxyAuditRetentionDays: 'ninety' is not a whole"):
        check_setting("PROXY_AUDIT_RETENTION_DAYS", "ninety")


def test_an_invalid_setting_stops_the_deployment(deploy: Callable[..., Deployment]) -> None:
    with pytest.raises(ConfigError, match="proxyTrustedProxies: '\\*' would let every client"):
        deploy(proxyTrustedProxies="*")


def example_keys() -> tuple[dict[str, object], set[str]]:
    """The example's `config:` entries, and every key it names (entries, comments, `--secret`)."""
    text = EXAMPLE.read_text()
    values = yaml.safe_load(text)["config"]
    named = set(re.findall(rf"{PROJECT}:(\w+)", text)) | set(re.findall(r"--secret (\w+)", text))
    return {key.removeprefix(f"{PROJECT}:"): value for key, value in values.items()}, named


def test_the_example_lists_exactly_the_derived_keys(keys: dict[str, Key]) -> None:
    _, named = example_keys()
    assert named == set(keys) | set(PULUMI_KEYS)


def test_the_example_sets_no_value_compose_already_has(keys: dict[str, Key]) -> None:
    values, _ = example_keys()
    # Only Pulumi's own keys have values; every compose variable keeps compose's default.
    assert set(values) <= set(PULUMI_KEYS) - {"namePrefix"}, sorted(values)
    text = EXAMPLE.read_text()
    for key in keys.values():
        default = key.variable.default
        if default:
            assert f": {default}" not in text, f"the example pins {key.name}'s default {default}"


def test_the_example_stack_config_deploys(deploy: Callable[..., Deployment]) -> None:
    values, _ = example_keys()
    config = {
        key: value if isinstance(value, str) else json.dumps(value) for key, value in values.items()
    }
    deployment = deploy(**config)
    assert "proxy" in deployment.containers


def test_the_dummy_secrets_cover_what_compose_requires() -> None:
    assert {config_key(name) for name in COMPOSE_SECRETS} == set(PULUMI_SECRETS)
