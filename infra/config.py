"""Every `pulumi config` value of the stack, read once into a frozen `StackConfig`.

Defaults equal what docker-compose.yml uses when `.env` leaves a variable unset; the drift test
(tests/infra/test_drift.py) renders the compose file and fails when the two disagree. Secrets
have no default: `pulumi config set --secret <key> <value>` is required for each of them.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

import pulumi

# Pinned upstream images, the same tags as docker-compose.yml (and docker-compose.gpu.yml).
OLLAMA_IMAGE = "ollama/ollama:0.33.3"
REDIS_IMAGE = "redis:7.4.5-alpine"
POSTGRES_IMAGE = "postgres:16.10-bookworm"
PROMETHEUS_IMAGE = "prom/prometheus:v3.13.2"
GRAFANA_IMAGE = "grafana/grafana:12.4.3"
GPU_EXPORTER_IMAGE = "utkuozdemir/nvidia_gpu_exporter:1.5.0"
NODE_EXPORTER_IMAGE = "prom/node-exporter:v1.9.1"
CADVISOR_IMAGE = "gcr.io/cadvisor/cadvisor:v0.52.1"
DOCKER_API_IMAGE = "haproxy:3.2.4-alpine"
PROXY_BASE_IMAGE = "python:3.11.13-slim-bookworm"
PROXY_IMAGE = "llm-proxy:local"

# Compose's project name: networks and volumes get the same Docker names either way, so a host
# moved from `docker compose` to `pulumi up` keeps its downloaded models and its database.
NAME_PREFIX = "llm-stack"
OLLAMA_MEMORY_LIMIT = "12g"
DEFAULT_MODELS = ("llama3.2",)

_MEMORY_UNITS = {"": 1, "b": 1, "k": 1024, "m": 1024**2, "g": 1024**3}
_MEMORY = re.compile(r"^\s*(\d+)\s*([bkmg]?)b?\s*$", re.IGNORECASE)
MIB = 1024**2


class ConfigError(ValueError):
    """A stack config value cannot be used; the message names the key and the fix."""


def memory_bytes(value: str) -> int:
    """Bytes in a Compose-style size ("12g", "512m"); Compose's units are powers of 1024."""
    match = _MEMORY.match(value)
    if match is None:
        raise ConfigError(f"ollamaMemoryLimit: {value!r} is not a size such as 12g or 8192m")
    number, unit = match.groups()
    size = int(number) * _MEMORY_UNITS[unit.lower()]
    # Docker's provider takes whole MiB; refusing the rest keeps Pulumi equal to Compose.
    if size % MIB or size == 0:
        raise ConfigError(f"ollamaMemoryLimit: {value!r} must be a positive whole number of MiB")
    return size


def trusted_proxies(value: str) -> str:
    """`proxyTrustedProxies` as given, once every entry is one the proxy accepts: it refuses to
    start otherwise (the same rules as proxy/core/settings.py, which this program does not
    import)."""
    for entry in (part.strip() for part in value.split(",")):
        if not entry:
            continue
        if entry == "*":
            raise ConfigError("proxyTrustedProxies: '*' would let every client choose its "
                              "address; list your reverse proxies' addresses or networks")
        try:
            ipaddress.ip_network(entry)
        except ValueError as exc:
            try:
                network = ipaddress.ip_network(entry, strict=False)
            except ValueError:
                raise ConfigError(f"proxyTrustedProxies: {entry!r} is not an IP address or "
                                  "network (e.g. 10.0.0.5 or 172.18.0.0/16)") from exc
            raise ConfigError(f"proxyTrustedProxies: {entry!r} has host bits set; did you mean "
                              f"{network}?") from exc
    return value


def audit_retention_days(days: int) -> int:
    if days < 0:
        raise ConfigError(f"proxyAuditRetentionDays: {days} is negative; audit rows are kept "
                          "this many days, and 0 keeps every row")
    return days


@dataclass(frozen=True)
class Images:
    ollama: str
    redis: str
    postgres: str
    prometheus: str
    grafana: str
    gpu_exporter: str
    node_exporter: str
    cadvisor: str
    docker_api: str
    proxy_base: str
    proxy: str


@dataclass(frozen=True)
class Secrets:
    jwt_secret: pulumi.Output[str]
    postgres_password: pulumi.Output[str]
    grafana_admin_password: pulumi.Output[str]
    metrics_token: pulumi.Output[str]
    # The proxy's own database role (not the superuser whose password is postgres_password).
    proxy_db_password: pulumi.Output[str]
    redis_password: pulumi.Output[str]
    grafana_secret_key: pulumi.Output[str]
    # Optional (the per-user Grafana panels need it): "" when not set, as in compose.
    grafana_audit_db_password: pulumi.Output[str]


@dataclass(frozen=True)
class StackConfig:
    name_prefix: str
    gpu: bool
    models: tuple[str, ...]
    ollama_memory_bytes: int
    ollama_keep_alive: str
    ollama_num_parallel: int
    ollama_max_loaded_models: int
    proxy_publish_address: str
    proxy_port: int
    prometheus_bind: str
    grafana_bind: str
    jwt_audience: str
    jwt_issuer: str
    proxy_trusted_proxies: str
    proxy_audit_retention_days: int
    images: Images
    secrets: Secrets


def _int(config: pulumi.Config, key: str, default: int) -> int:
    # Not `or default`: 0 is meaningful for some keys (OLLAMA_NUM_PARALLEL=0 lets Ollama choose).
    value = config.get_int(key)
    return default if value is None else value


def load_config() -> StackConfig:
    config = pulumi.Config()
    models = config.get_object("models")
    if models is None:
        models = list(DEFAULT_MODELS)
    if not isinstance(models, list) or not all(isinstance(m, str) and m for m in models):
        raise ConfigError('models: expected a list of model names, e.g. ["llama3.2", "mistral"]')
    return StackConfig(
        name_prefix=config.get("namePrefix") or NAME_PREFIX,
        gpu=config.get_bool("gpu") or False,
        models=tuple(models),
        ollama_memory_bytes=memory_bytes(config.get("ollamaMemoryLimit") or OLLAMA_MEMORY_LIMIT),
        ollama_keep_alive=config.get("ollamaKeepAlive") or "5m",
        ollama_num_parallel=_int(config, "ollamaNumParallel", 2),
        ollama_max_loaded_models=_int(config, "ollamaMaxLoadedModels", 1),
        proxy_publish_address=config.get("proxyPublishAddress") or "0.0.0.0",
        proxy_port=_int(config, "proxyPort", 8000),
        prometheus_bind=config.get("prometheusBind") or "127.0.0.1",
        grafana_bind=config.get("grafanaBind") or "127.0.0.1",
        jwt_audience=config.get("jwtAudience") or "",
        jwt_issuer=config.get("jwtIssuer") or "",
        proxy_trusted_proxies=trusted_proxies(config.get("proxyTrustedProxies") or ""),
        proxy_audit_retention_days=audit_retention_days(
            _int(config, "proxyAuditRetentionDays", 90)
        ),
        images=Images(
            ollama=config.get("ollamaImage") or OLLAMA_IMAGE,
            redis=config.get("redisImage") or REDIS_IMAGE,
            postgres=config.get("postgresImage") or POSTGRES_IMAGE,
            prometheus=config.get("prometheusImage") or PROMETHEUS_IMAGE,
            grafana=config.get("grafanaImage") or GRAFANA_IMAGE,
            gpu_exporter=config.get("gpuExporterImage") or GPU_EXPORTER_IMAGE,
            node_exporter=config.get("nodeExporterImage") or NODE_EXPORTER_IMAGE,
            cadvisor=config.get("cadvisorImage") or CADVISOR_IMAGE,
            docker_api=config.get("dockerApiImage") or DOCKER_API_IMAGE,
            proxy_base=config.get("proxyBaseImage") or PROXY_BASE_IMAGE,
            proxy=config.get("proxyImage") or PROXY_IMAGE,
        ),
        secrets=Secrets(
            jwt_secret=config.require_secret("jwtSecret"),
            postgres_password=config.require_secret("postgresPassword"),
            grafana_admin_password=config.require_secret("grafanaAdminPassword"),
            metrics_token=config.require_secret("metricsToken"),
            proxy_db_password=config.require_secret("proxyDbPassword"),
            redis_password=config.require_secret("redisPassword"),
            grafana_secret_key=config.require_secret("grafanaSecretKey"),
            grafana_audit_db_password=config.get_secret("grafanaAuditDbPassword")
            or pulumi.Output.secret(""),
        ),
    )
