"""Hardening rules, checked on what the real `docker compose config` renders.

The Pulumi program deploys this same rendering (test_pulumi_policies.py checks what it derives
from it); the running stack is checked with `docker inspect` in tests/stack.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

import pytest

from proxy.core.settings import Settings
from tests.infra.stack_files import COMPOSE, COMPOSE_SECRETS, GPU_COMPOSE, rendered

NO_NEW_PRIVILEGES = "no-new-privileges:true"
DOCKER_SOCKET = "/var/run/docker.sock"
# Host paths that hold the Docker (or containerd) socket, or everything: a container that mounts
# one of them can drive the engine, which is root on the host.
SOCKET_HOLDERS = ("/", "/var/run", "/run", "/var/run/docker.sock", "/run/docker.sock",
                  "/run/containerd", "/var/run/containerd")
# Services whose root filesystem stays writable, and why.
WRITABLE_ROOT = {
    "prometheus": "Compose copies its environment-sourced secret (the metrics token) into the "
    "container, which it refuses for a read-only service",
}


@pytest.fixture(scope="module")
def gpu_stack() -> dict[str, Any]:
    return rendered(COMPOSE, GPU_COMPOSE)


@pytest.fixture
def services(gpu_stack: dict[str, Any]) -> dict[str, Any]:
    found: dict[str, Any] = gpu_stack["services"]
    return found


@pytest.fixture
def networks(gpu_stack: dict[str, Any]) -> dict[str, Any]:
    found: dict[str, Any] = gpu_stack["networks"]
    return found


def members(services: dict[str, Any], network: str) -> set[str]:
    return {name for name, service in services.items() if network in service.get("networks", {})}


def host_sources(service: dict[str, Any]) -> list[str]:
    return [m["source"] for m in service.get("volumes", []) if m["type"] == "bind"]


def test_every_service_drops_every_capability(services: dict[str, Any]) -> None:
    kept = {
        name: {"cap_drop": s.get("cap_drop"), "cap_add": s.get("cap_add")}
        for name, s in services.items()
        if s.get("cap_drop") != ["ALL"] or s.get("cap_add")
    }
    assert not kept, f"services that keep Linux capabilities: {kept}"


def test_every_service_forbids_new_privileges(services: dict[str, Any]) -> None:
    missing = sorted(
        name for name, s in services.items() if NO_NEW_PRIVILEGES not in s.get("security_opt", [])
    )
    assert not missing, f"services without {NO_NEW_PRIVILEGES}: {missing}"


def test_every_root_filesystem_is_read_only_but_prometheus(services: dict[str, Any]) -> None:
    writable = sorted(name for name, s in services.items() if s.get("read_only") is not True)
    assert writable == sorted(WRITABLE_ROOT), f"writable root filesystems: {writable}"


def test_the_writable_exception_is_the_one_compose_forces(services: dict[str, Any]) -> None:
    # Compose copies `secrets:` from the environment into the created container and refuses that
    # for a read-only service; were Prometheus read-only, `up` would fail. Nothing else has such
    # a secret, so nothing else may be writable.
    assert {name for name, s in services.items() if s.get("secrets")} == set(WRITABLE_ROOT)
    assert services["prometheus"]["secrets"][0]["source"] == "proxy_metrics_token"


def test_cadvisor_has_no_docker_socket(services: dict[str, Any]) -> None:
    cadvisor = services["cadvisor"]
    held = [source for source in host_sources(cadvisor) if source in SOCKET_HOLDERS]
    assert not held, f"cAdvisor mounts {held}: whoever controls it controls the Docker engine"
    assert all(m.get("read_only") for m in cadvisor["volumes"] if m["type"] == "bind")
    # Container names still come from Docker's API, through the filtering proxy.
    assert "--docker=tcp://docker-api:2375" in cadvisor["command"]


def test_only_the_docker_api_proxy_holds_the_socket_and_only_cadvisor_reaches_it(
    services: dict[str, Any], networks: dict[str, Any]
) -> None:
    holders = {name for name, s in services.items() if DOCKER_SOCKET in host_sources(s)}
    assert holders == {"docker-api"}
    assert list(services["docker-api"]["networks"]) == ["docker-api"]
    assert networks["docker-api"].get("internal") is True
    assert members(services, "docker-api") == {"docker-api", "cadvisor"}


def test_redis_requires_the_password(services: dict[str, Any]) -> None:
    redis = services["redis"]
    password = COMPOSE_SECRETS["REDIS_PASSWORD"]
    assert redis["environment"]["REDIS_PASSWORD"] == password
    assert "--requirepass" in " ".join(redis["command"])
    # The healthcheck must authenticate too: an unauthenticated `redis-cli ping` exits 0.
    assert "REDISCLI_AUTH" in " ".join(redis["healthcheck"]["test"])
    url = urlsplit(services["proxy"]["environment"]["REDIS_URL"])
    assert (url.hostname, url.password) == ("redis", password)


def test_only_the_proxy_shares_a_network_with_redis(
    services: dict[str, Any], networks: dict[str, Any]
) -> None:
    for network in services["redis"]["networks"]:
        assert members(services, network) == {"redis", "proxy"}, f"{network}: too many members"
        assert networks[network].get("internal") is True, f"{network} is not internal"


def test_the_proxy_connects_as_its_own_role_not_the_superuser(services: dict[str, Any]) -> None:
    postgres, proxy = services["postgres"], services["proxy"]
    url = urlsplit(proxy["environment"]["DATABASE_URL"])
    # POSTGRES_USER is the superuser the image creates; the proxy must not be it.
    assert url.username != postgres["environment"]["POSTGRES_USER"]
    assert url.password == COMPOSE_SECRETS["PROXY_DB_PASSWORD"]
    assert postgres["environment"]["PROXY_DB_PASSWORD"] == COMPOSE_SECRETS["PROXY_DB_PASSWORD"]
    assert postgres["environment"]["PROXY_DB_ROLE"] == url.username
    init = [m["target"] for m in postgres["volumes"] if m["type"] == "bind"]
    assert any(t.startswith("/docker-entrypoint-initdb.d/") for t in init), init


def test_grafana_signs_with_its_own_secret_key(services: dict[str, Any]) -> None:
    environment = services["grafana"]["environment"]
    assert environment["GF_SECURITY_SECRET_KEY"] == COMPOSE_SECRETS["GRAFANA_SECRET_KEY"]


def test_the_stack_passes_the_proxys_own_defaults() -> None:
    environment = rendered(COMPOSE)["services"]["proxy"]["environment"]
    defaults = Settings.model_fields
    # Empty, as the proxy's default: no address may choose the audited client address.
    assert environment["PROXY_TRUSTED_PROXIES"] == ""
    assert defaults["proxy_trusted_proxies"].default_factory is list
    assert environment["PROXY_AUDIT_RETENTION_DAYS"] == str(
        defaults["proxy_audit_retention_days"].default
    )
