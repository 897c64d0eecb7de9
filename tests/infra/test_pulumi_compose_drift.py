"""docker-compose.yml and the Pulumi program describe the same stack; any drift fails here.

Compose is rendered by the real `docker-compose config`, Pulumi's resources come from its mock
runtime, and both are brought to one shape by `stack_model` (its docstring lists what is
compared). The last tests prove the comparison bites: a change on either side alone fails it.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from proxy.core.settings import Settings
from tests.infra.compose_render import COMPOSE_FILE, GPU_COMPOSE_FILE, ComposeResult
from tests.infra.mocked_program import COMPOSE_SECRETS, Deployment
from tests.infra.stack_model import differences, from_compose, from_pulumi

Deploy = Callable[..., Deployment]
Compose = Callable[..., ComposeResult]

# Each operator setting: its `.env` variable, its Pulumi config key, a non-default value.
SETTINGS = [
    ("PROXY_PUBLISH_ADDRESS", "proxyPublishAddress", "127.0.0.1"),
    ("PROXY_PORT", "proxyPort", "18000"),
    ("PROMETHEUS_BIND", "prometheusBind", "0.0.0.0"),
    ("GRAFANA_BIND", "grafanaBind", "10.0.0.5"),
    ("OLLAMA_MEMORY_LIMIT", "ollamaMemoryLimit", "8g"),
    ("OLLAMA_KEEP_ALIVE", "ollamaKeepAlive", "30m"),
    ("OLLAMA_NUM_PARALLEL", "ollamaNumParallel", "4"),
    ("OLLAMA_MAX_LOADED_MODELS", "ollamaMaxLoadedModels", "2"),
    ("JWT_AUDIENCE", "jwtAudience", "llm-users"),
    ("JWT_ISSUER", "jwtIssuer", "https://id.example.org"),
    ("PROXY_IMAGE", "proxyImage", "registry.example.org/llm-proxy:1.2.3"),
    # The proxy's own settings the stack passes on (behind a reverse proxy; the audit duty).
    ("PROXY_TRUSTED_PROXIES", "proxyTrustedProxies", "172.18.0.1,fd00::/64"),
    ("PROXY_AUDIT_RETENTION_DAYS", "proxyAuditRetentionDays", "400"),
    # Optional secret: compose renders it empty when unset, Pulumi too; set here on both sides.
    ("GRAFANA_AUDIT_DB_PASSWORD", "grafanaAuditDbPassword", "test-audit-reader-password"),
]


def drift(
    compose: Compose,
    deploy: Deploy,
    files: tuple[Path, ...] = (COMPOSE_FILE,),
    env: dict[str, str] | None = None,
    **config: str,
) -> list[str]:
    rendered = compose(*files, env={**COMPOSE_SECRETS, **(env or {})}).json()
    return differences(from_compose(rendered), from_pulumi(deploy(**config)))


@pytest.mark.parametrize(
    ("files", "env", "config"),
    [
        pytest.param((COMPOSE_FILE,), {}, {}, id="defaults"),
        pytest.param((COMPOSE_FILE, GPU_COMPOSE_FILE), {}, {"gpu": "true"}, id="gpu"),
        pytest.param(
            (COMPOSE_FILE,),
            {variable: value for variable, _, value in SETTINGS},
            {key: value for _, key, value in SETTINGS},
            id="operator-settings",
        ),
    ],
)
def test_pulumi_declares_what_compose_renders(
    compose: Compose,
    deploy: Deploy,
    files: tuple[Path, ...],
    env: dict[str, str],
    config: dict[str, str],
) -> None:
    found = drift(compose, deploy, files, env, **config)
    assert found == [], "docker-compose.yml and infra/ disagree:\n" + "\n".join(found)


@pytest.mark.parametrize(
    ("variable", "key", "value"), SETTINGS, ids=[variable for variable, _, _ in SETTINGS]
)
def test_each_operator_setting_set_on_one_side_alone_is_reported(
    compose: Compose, deploy: Deploy, variable: str, key: str, value: str
) -> None:
    # A row both sides ignore would pass the equality above and carry nothing to the stack.
    compose_only = drift(compose, deploy, env={variable: value})
    pulumi_only = drift(compose, deploy, **{key: value})
    assert compose_only, f"docker-compose.yml ignores {variable}={value}"
    assert pulumi_only, f"infra/ ignores the stack config {key}={value}"


def test_the_stack_passes_the_proxys_own_defaults(compose: Compose) -> None:
    environment = compose(COMPOSE_FILE).json()["services"]["proxy"]["environment"]
    defaults = Settings.model_fields
    # Empty, as the proxy's default: no address may choose the audited client address.
    assert environment["PROXY_TRUSTED_PROXIES"] == ""
    assert defaults["proxy_trusted_proxies"].default_factory is list
    assert environment["PROXY_AUDIT_RETENTION_DAYS"] == str(
        defaults["proxy_audit_retention_days"].default
    )


def test_the_comparison_covers_every_service(compose: Compose) -> None:
    rendered = from_compose(compose(COMPOSE_FILE, GPU_COMPOSE_FILE).json())
    assert sorted(rendered["services"]) == [
        "cadvisor",
        "docker-api",
        "gpu-exporter",
        "grafana",
        "node-exporter",
        "ollama",
        "postgres",
        "prometheus",
        "proxy",
        "redis",
    ]
    # The proxy's env, mounts and ports are non-trivial, so equality above is not vacuous.
    proxy = rendered["services"]["proxy"]
    assert proxy["ports"] and proxy["environment"] and proxy["healthcheck"]
    assert rendered["services"]["prometheus"]["files"], "prometheus config files not expanded"
    assert rendered["services"]["prometheus"]["secrets"] == ["/run/secrets/proxy_metrics_token"]
    # The exporters' host views are compared as host paths, not expanded into files.
    node = rendered["services"]["node-exporter"]
    assert node["host_mounts"] == [("/", "/host", True, "rslave")]
    assert node["pid"] == "host"
    assert node["files"] == {
        "/etc/node-exporter/textfile/llm_stack.prom": node["files"][
            "/etc/node-exporter/textfile/llm_stack.prom"
        ]
    }
    assert len(rendered["services"]["cadvisor"]["host_mounts"]) == 2
    # The hardening is compared too, and is there to compare.
    for name, service in rendered["services"].items():
        assert service["cap_drop"] == ["ALL"], name
        assert service["read_only"] is (name != "prometheus"), name
        assert service["security_opt"] == ["no-new-privileges:true"], name
    assert rendered["services"]["postgres"]["tmpfs"] and rendered["services"]["redis"]["user"]


def mutated_compose(tmp_path: Path, change: Callable[[dict[str, Any]], None]) -> Path:
    document = yaml.safe_load(COMPOSE_FILE.read_text())
    change(document)
    path = tmp_path / "docker-compose.mutated.yml"
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


def _publish_ollama(doc: dict[str, Any]) -> None:
    doc["services"]["ollama"]["ports"] = ["127.0.0.1:11434:11434"]


def _bump_redis(doc: dict[str, Any]) -> None:
    doc["services"]["redis"]["image"] = "redis:7.4.6-alpine"


def _drop_env(doc: dict[str, Any]) -> None:
    del doc["services"]["proxy"]["environment"]["JWT_ISSUER"]


def _memory(doc: dict[str, Any]) -> None:
    doc["services"]["ollama"]["deploy"]["resources"]["limits"]["memory"] = "16g"


def _network(doc: dict[str, Any]) -> None:
    doc["services"]["redis"]["networks"].append("frontend")


def _volume(doc: dict[str, Any]) -> None:
    doc["services"]["postgres"]["volumes"] = ["postgres-data:/var/lib/postgresql"]


def _host_mount(doc: dict[str, Any]) -> None:
    doc["services"]["cadvisor"]["volumes"].append("/var/run:/var/run:ro")


def _cap_add(doc: dict[str, Any]) -> None:
    doc["services"]["postgres"]["cap_add"] = ["CHOWN"]


def _cap_drop(doc: dict[str, Any]) -> None:
    del doc["services"]["ollama"]["cap_drop"]


def _security_opt(doc: dict[str, Any]) -> None:
    doc["services"]["grafana"]["security_opt"] = []


def _read_only(doc: dict[str, Any]) -> None:
    doc["services"]["proxy"]["read_only"] = False


def _tmpfs(doc: dict[str, Any]) -> None:
    doc["services"]["postgres"]["tmpfs"] = ["/tmp"]


def _user(doc: dict[str, Any]) -> None:
    del doc["services"]["redis"]["user"]


def _pid(doc: dict[str, Any]) -> None:
    del doc["services"]["node-exporter"]["pid"]


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (_publish_ollama, "ollama.ports"),
        (_bump_redis, "redis.image"),
        (_drop_env, "proxy.environment"),
        (_memory, "ollama.memory"),
        (_network, "redis.networks"),
        (_volume, "postgres.volumes"),
        (_host_mount, "cadvisor.host_mounts"),
        (_pid, "node-exporter.pid"),
        (_cap_add, "postgres.cap_add"),
        (_cap_drop, "ollama.cap_drop"),
        (_security_opt, "grafana.security_opt"),
        (_read_only, "proxy.read_only"),
        (_tmpfs, "postgres.tmpfs"),
        (_user, "redis.user"),
    ],
)
def test_a_compose_only_change_is_reported(
    compose: Compose,
    deploy: Deploy,
    tmp_path: Path,
    change: Callable[[dict[str, Any]], None],
    expected: str,
) -> None:
    found = drift(compose, deploy, (mutated_compose(tmp_path, change),))
    assert any(line.startswith(expected) for line in found), f"{expected} not reported: {found}"


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        ({"redisImage": "redis:7.4.6-alpine"}, "redis.image"),
        ({"ollamaMemoryLimit": "16g"}, "ollama.memory"),
        ({"proxyPort": "8080"}, "proxy.ports"),
        ({"grafanaBind": "0.0.0.0"}, "grafana.ports"),
        ({"ollamaKeepAlive": "1h"}, "ollama.environment"),
        ({"proxyBaseImage": "python:3.12-slim-bookworm"}, "proxy.build"),
        ({"gpu": "true"}, "ollama.gpu"),
        # A GPU host must also say so to node exporter (GpuNotDetected's expectation).
        ({"gpu": "true"}, "node-exporter.files"),
        ({"cadvisorImage": "gcr.io/cadvisor/cadvisor:v0.52.0"}, "cadvisor.image"),
    ],
)
def test_a_pulumi_only_change_is_reported(
    compose: Compose, deploy: Deploy, config: dict[str, str], expected: str
) -> None:
    found = drift(compose, deploy, **config)
    assert any(line.startswith(expected) for line in found), f"{expected} not reported: {found}"


def test_a_gpu_exporter_on_one_side_only_is_reported(compose: Compose, deploy: Deploy) -> None:
    found = drift(compose, deploy, (COMPOSE_FILE, GPU_COMPOSE_FILE))
    assert "service 'gpu-exporter' is declared only in compose" in found
