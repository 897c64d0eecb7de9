"""`infra/config.py`: parsing, and the example stack config staying in step with it."""

from __future__ import annotations

import json
import re
from collections.abc import Callable

import pytest
import yaml

from infra.config import MIB, ConfigError, audit_retention_days, memory_bytes, trusted_proxies
from tests.infra.mocked_program import PROJECT, REPO_ROOT, Deployment

CONFIG_PY = REPO_ROOT / "infra" / "config.py"
EXAMPLE = REPO_ROOT / "infra" / "Pulumi.dev.example.yaml"


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
    with pytest.raises(ConfigError, match="ollamaMemoryLimit"):
        memory_bytes(value)


@pytest.mark.parametrize("value", ["", "172.18.0.1", "172.18.0.1, 10.0.0.0/8", "fd00::/64"])
def test_trusted_proxies_the_proxy_accepts_are_passed_as_written(value: str) -> None:
    assert trusted_proxies(value) == value


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
    with pytest.raises(ConfigError, match="proxyTrustedProxies") as refused:
        trusted_proxies(value)
    assert reason in str(refused.value)


def test_a_negative_audit_retention_stops_the_program() -> None:
    assert audit_retention_days(0) == 0
    with pytest.raises(ConfigError, match="proxyAuditRetentionDays: -1 .*0 keeps every row"):
        audit_retention_days(-1)


def test_every_config_key_is_documented_in_the_example() -> None:
    read = set(
        re.findall(
            r'config\.(?:get|get_int|get_bool|get_object|get_secret|require_secret)\("(\w+)"',
            CONFIG_PY.read_text(),
        )
    )
    read |= set(re.findall(r'_int\(config, "(\w+)"', CONFIG_PY.read_text()))
    documented = set(re.findall(rf"{PROJECT}:(\w+)", EXAMPLE.read_text()))
    documented |= set(re.findall(r"--secret (\w+)", EXAMPLE.read_text()))
    assert read, "no config keys found in infra/config.py"
    assert read - documented == set(), "undocumented in Pulumi.dev.example.yaml"


def test_the_example_stack_config_deploys(deploy: Callable[..., Deployment]) -> None:
    values = yaml.safe_load(EXAMPLE.read_text())["config"]
    config = {
        key.removeprefix(f"{PROJECT}:"): value if isinstance(value, str) else json.dumps(value)
        for key, value in values.items()
    }
    deployment = deploy(**config)
    assert "proxy" in deployment.containers
