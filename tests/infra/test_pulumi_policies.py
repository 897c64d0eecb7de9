"""Isolation and secrecy rules, checked on what the Pulumi program derives from the real
`docker compose config` of docker-compose.yml (under Pulumi's mocks)."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from pulumi.config import ConfigMissingError

from infra.config import ConfigError
from tests.infra.pulumi_mocks import Deployment, plain_parts, reveal, run_program
from tests.infra.stack_files import PULUMI_SECRETS, REPO_ROOT, rendered

Deploy = Callable[..., Deployment]
PRIVATE = ("ollama", "redis", "postgres", "node-exporter", "cadvisor", "docker-api")


def published(deployment: Deployment, name: str) -> list[tuple[str, int, int]]:
    ports = deployment.container(name).plain.get("ports") or []
    return [(p.get("ip", "0.0.0.0"), int(p.get("external", 0)), int(p["internal"])) for p in ports]


def networks_of(deployment: Deployment, name: str) -> set[str]:
    attached = deployment.container(name).plain.get("networksAdvanced", [])
    return {n["name"].removeprefix("llm-stack_") for n in attached}


@pytest.mark.parametrize("gpu", ["false", "true"])
def test_private_services_publish_nothing(deploy: Deploy, gpu: str) -> None:
    deployment = deploy(gpu=gpu)
    private = PRIVATE + (("gpu-exporter",) if gpu == "true" else ())
    for name in private:
        inputs = deployment.container(name).plain
        # Any ContainerPortArgs at all publishes (random host port when `external` is unset).
        assert not inputs.get("ports"), f"{name} must publish no port, declares {inputs['ports']}"
        assert not inputs.get("publishAllPorts"), f"{name} must not publish its exposed ports"


def test_only_the_proxy_and_the_monitoring_uis_publish(deploy: Deploy) -> None:
    deployment = deploy(gpu="true")
    publishing = {name for name in deployment.containers if published(deployment, name)}
    assert publishing == {"proxy", "prometheus", "alertmanager", "grafana"}


def test_proxy_publishes_exactly_8000_on_the_configured_address(deploy: Deploy) -> None:
    assert published(deploy(), "proxy") == [("0.0.0.0", 8000, 8000)]
    configured = deploy(proxyPublishAddress="127.0.0.1", proxyPort="18000")
    assert published(configured, "proxy") == [("127.0.0.1", 18000, 8000)]


def test_the_monitoring_uis_bind_loopback_unless_opted_in(deploy: Deploy) -> None:
    deployment = deploy()
    assert published(deployment, "prometheus") == [("127.0.0.1", 9090, 9090)]
    assert published(deployment, "alertmanager") == [("127.0.0.1", 9093, 9093)]
    assert published(deployment, "grafana") == [("127.0.0.1", 3000, 3000)]
    opted_in = deploy(prometheusBind="0.0.0.0", alertmanagerBind="10.0.0.6",
                      grafanaBind="10.0.0.5")
    assert published(opted_in, "prometheus") == [("0.0.0.0", 9090, 9090)]
    assert published(opted_in, "alertmanager") == [("10.0.0.6", 9093, 9093)]
    assert published(opted_in, "grafana") == [("10.0.0.5", 3000, 3000)]


def test_backend_network_is_internal_and_the_others_are_not(deploy: Deploy) -> None:
    internal = {
        net.plain["name"]: bool(net.plain.get("internal")) for net in deploy().networks.values()
    }
    assert internal == {
        "llm-stack_backend": True,
        "llm-stack_frontend": False,
        "llm-stack_egress": False,
        "llm-stack_analytics": True,
        "llm-stack_redis": True,
        "llm-stack_docker-api": True,
    }


def test_each_service_is_on_exactly_its_networks(deploy: Deploy) -> None:
    deployment = deploy(gpu="true")
    expected = {
        # egress lets Ollama pull models and Alertmanager reach its receivers; nothing is
        # published on it and only those two are on it.
        "ollama": {"backend", "egress"},
        # Prometheus sends it alerts over backend.
        "alertmanager": {"backend", "egress"},
        # Only the proxy uses Redis, so only the proxy shares its network.
        "redis": {"redis"},
        # analytics: only Postgres and Grafana, for the audit-log panels.
        "postgres": {"backend", "analytics"},
        "gpu-exporter": {"backend"},
        "node-exporter": {"backend"},
        # docker-api: the read-only Docker API proxy, which only cAdvisor may reach.
        "cadvisor": {"backend", "docker-api"},
        "docker-api": {"docker-api"},
        "proxy": {"backend", "frontend", "redis"},
        "prometheus": {"backend", "frontend"},
        "grafana": {"frontend", "analytics"},
    }
    for name, networks in expected.items():
        assert networks_of(deployment, name) == networks, f"{name} is on the wrong networks"


def test_services_answer_to_their_compose_names(deploy: Deploy) -> None:
    # prometheus.yml, the Grafana datasource and the proxy's URLs use the compose service names.
    for name, container in deploy(gpu="true").containers.items():
        for network in container.plain["networksAdvanced"]:
            assert network.get("aliases") == [name], f"{name} lacks its alias on {network['name']}"


def test_gpu_is_requested_only_when_gpu_is_on(deploy: Deploy) -> None:
    cpu = deploy()
    assert "gpu-exporter" not in cpu.containers
    for name, container in cpu.containers.items():
        assert not container.plain.get("deviceRequests"), f"{name} requests a GPU with gpu=false"

    gpu = deploy(gpu="true")
    assert gpu.container("ollama").plain["deviceRequests"] == [
        {"driver": "nvidia", "count": -1.0, "capabilities": ["gpu"]}
    ]
    assert gpu.container("gpu-exporter").plain["deviceRequests"] == [
        {"driver": "nvidia", "count": -1.0, "capabilities": ["gpu", "utility"]}
    ]
    others = set(gpu.containers) - {"ollama", "gpu-exporter"}
    for name in others:
        assert not gpu.container(name).plain.get("deviceRequests"), f"{name} requests a GPU"


@pytest.mark.parametrize(("gpu", "expected"), [("false", 0), ("true", 1)])
def test_node_exporter_says_whether_a_gpu_is_expected(
    deploy: Deploy, gpu: str, expected: int
) -> None:
    # docker-compose.gpu.yml swaps the textfile behind GpuNotDetected; Pulumi's gpu follows it.
    uploads = deploy(gpu=gpu).container("node-exporter").plain["uploads"]
    files = {u["file"]: u["content"] for u in uploads}
    textfile = files["/etc/node-exporter/textfile/llm_stack.prom"]
    assert f"\nllm_stack_gpu_expected {expected}\n" in textfile


ALERTMANAGER_ROUTING = "/etc/alertmanager/alertmanager.yml"


def test_alertmanagers_routing_is_the_shipped_file_or_a_file_on_the_docker_host(
    deploy: Deploy,
) -> None:
    shipped = deploy().container("alertmanager").plain
    files = {u["file"]: u["content"] for u in shipped["uploads"]}
    assert files[ALERTMANAGER_ROUTING] == (
        REPO_ROOT / "dashboards" / "alertmanager" / "alertmanager.yml"
    ).read_text()
    # The operator's file holds receivers' URLs and passwords: bound from the Docker host,
    # read-only, never uploaded (an upload's content would sit in Pulumi's state in clear).
    own = deploy(alertmanagerConfig="/etc/llm-stack/alertmanager.yml").container("alertmanager")
    assert ALERTMANAGER_ROUTING not in {u["file"] for u in own.plain.get("uploads") or []}
    mounts = [(m["source"], m["target"], m.get("readOnly")) for m in own.plain["mounts"]]
    assert mounts == [("/etc/llm-stack/alertmanager.yml", ALERTMANAGER_ROUTING, True)]


def test_ollama_memory_limit_is_compose_default_and_configurable(deploy: Deploy) -> None:
    # Docker's provider counts MiB: 12g = 12 * 1024 MiB = 12884901888 bytes, as Compose has it.
    assert deploy().container("ollama").plain["memory"] == 12 * 1024
    assert deploy(ollamaMemoryLimit="8g").container("ollama").plain["memory"] == 8 * 1024
    with pytest.raises(ConfigError, match="ollamaMemoryLimit"):
        deploy(ollamaMemoryLimit="lots")


def test_secrets_reach_containers_only_as_secret_outputs(deploy: Deploy) -> None:
    deployment = deploy(gpu="true")
    for resource in deployment.resources:
        for part in plain_parts(resource.inputs):
            for key, secret in PULUMI_SECRETS.items():
                assert secret not in str(part), (
                    f"{resource.type} {resource.name!r} has {key} in a non-secret input"
                )
    # Not vacuous: the values are there, wrapped as secrets.
    proxy_env = reveal(deployment.container("proxy").inputs["envs"])
    assert f"JWT_SECRET={PULUMI_SECRETS['jwtSecret']}" in proxy_env
    prometheus_files = reveal(deployment.container("prometheus").inputs["uploads"])
    token_file = {u["file"]: u for u in prometheus_files}["/run/secrets/proxy_metrics_token"]
    assert token_file["content"] == PULUMI_SECRETS["proxyMetricsToken"]


def test_metrics_token_is_a_file_for_prometheus_not_an_environment_variable(
    deploy: Deploy,
) -> None:
    prometheus = deploy().container("prometheus").plain
    assert not prometheus.get("envs"), "prometheus needs no environment, least of all the token"


def test_exporters_see_the_host_read_only(deploy: Deploy) -> None:
    deployment = deploy()
    for name in ("node-exporter", "cadvisor"):
        mounts = deployment.container(name).plain.get("mounts", [])
        assert mounts, f"{name} mounts nothing from the host"
        writable = [m["source"] for m in mounts if not m.get("readOnly")]
        assert writable == [], f"{name} can write to host paths {writable}"
        assert not deployment.container(name).plain.get("privileged"), f"{name} is privileged"


def test_the_audit_reader_password_is_optional_and_secret(deploy: Deploy) -> None:
    unset = reveal(deploy().container("grafana").inputs["envs"])
    assert "GRAFANA_AUDIT_DB_PASSWORD=" in unset
    password = "audit-reader-password-0123456789"
    deployment = deploy(grafanaAuditDbPassword=password)
    for resource in deployment.resources:
        for part in plain_parts(resource.inputs):
            assert password not in str(part), f"{resource.name!r} has the password in clear"
    envs = reveal(deployment.container("grafana").inputs["envs"])
    assert f"GRAFANA_AUDIT_DB_PASSWORD={password}" in envs


@pytest.mark.parametrize("missing", sorted(PULUMI_SECRETS))
def test_every_secret_is_required(deploy: Deploy, missing: str) -> None:
    with pytest.raises(ConfigMissingError, match=missing):
        deploy(without=(missing,))


# --- hardening ------------------------------------------------------------------------------------

NO_NEW_PRIVILEGES = "no-new-privileges:true"
# As in docker-compose.yml (see tests/infra/test_compose_policies.py for why).
WRITABLE_ROOT = {"prometheus"}


def _under(path: str, directory: str) -> bool:
    return path == directory or path.startswith(directory.rstrip("/") + "/")


@pytest.mark.parametrize("gpu", ["false", "true"])
def test_every_container_is_hardened(deploy: Deploy, gpu: str) -> None:
    for name, container in deploy(gpu=gpu).containers.items():
        inputs = container.plain
        capabilities = inputs.get("capabilities") or {}
        assert capabilities.get("drops") == ["ALL"], f"{name} keeps capabilities"
        assert not capabilities.get("adds"), f"{name} adds capabilities {capabilities['adds']}"
        assert NO_NEW_PRIVILEGES in (inputs.get("securityOpts") or []), f"{name} may escalate"
        read_only = name not in WRITABLE_ROOT
        assert bool(inputs.get("readOnly")) is read_only, f"{name}: readOnly is not {read_only}"


def test_uploads_into_read_only_containers_land_in_volumes(deploy: Deploy) -> None:
    # Docker refuses to copy a file into a read-only root filesystem unless the path is on a
    # volume; the provider uploads before the container starts, so a tmpfs would hide them.
    for name, container in deploy(gpu="true").containers.items():
        inputs = container.plain
        if not inputs.get("readOnly"):
            continue
        volumes = [v["containerPath"] for v in inputs.get("volumes") or []]
        for upload in inputs.get("uploads") or []:
            assert any(_under(upload["file"], v) for v in volumes), (
                f"{name}: {upload['file']} is not on a volume, Docker would refuse the upload"
            )


def test_cadvisor_reaches_docker_only_through_the_read_only_api_proxy(deploy: Deploy) -> None:
    deployment = deploy()
    cadvisor = deployment.container("cadvisor").plain
    sources = [m["source"] for m in cadvisor.get("mounts", [])]
    assert not {"/", "/var/run", "/run", "/var/run/docker.sock"} & set(sources), sources
    assert "--docker=tcp://docker-api:2375" in cadvisor["command"]
    holders = {
        name
        for name, container in deployment.containers.items()
        if "/var/run/docker.sock" in [m["source"] for m in container.plain.get("mounts", [])]
    }
    assert holders == {"docker-api"}
    assert networks_of(deployment, "docker-api") == {"docker-api"}
    reaching = {n for n in deployment.containers if "docker-api" in networks_of(deployment, n)}
    assert reaching == {"docker-api", "cadvisor"}


def test_only_the_proxy_shares_a_network_with_redis(deploy: Deploy) -> None:
    deployment = deploy(gpu="true")
    for network in networks_of(deployment, "redis"):
        sharing = {n for n in deployment.containers if network in networks_of(deployment, n)}
        assert sharing == {"redis", "proxy"}, f"{network} joins {sharing}"


def test_redis_and_the_proxy_use_the_redis_password(deploy: Deploy) -> None:
    deployment = deploy()
    password = PULUMI_SECRETS["redisPassword"]
    redis_env = reveal(deployment.container("redis").inputs["envs"])
    assert f"REDIS_PASSWORD={password}" in redis_env
    assert "--requirepass" in " ".join(deployment.container("redis").plain["command"])
    proxy_env = reveal(deployment.container("proxy").inputs["envs"])
    assert f"REDIS_URL=redis://:{password}@redis:6379/0" in proxy_env


def test_the_proxy_connects_as_its_own_database_role(deploy: Deploy) -> None:
    deployment = deploy()
    password = PULUMI_SECRETS["proxyDbPassword"]
    postgres_env = reveal(deployment.container("postgres").inputs["envs"])
    proxy_env = reveal(deployment.container("proxy").inputs["envs"])
    assert f"DATABASE_URL=postgresql://llm_proxy:{password}@postgres:5432/llm" in proxy_env
    assert "POSTGRES_USER=llm" in postgres_env
    assert f"PROXY_DB_PASSWORD={password}" in postgres_env
    uploads = [u["file"] for u in deployment.container("postgres").plain.get("uploads", [])]
    assert any(f.startswith("/docker-entrypoint-initdb.d/") for f in uploads), uploads


def test_grafana_secret_key_is_the_configured_secret(deploy: Deploy) -> None:
    envs = reveal(deploy().container("grafana").inputs["envs"])
    assert f"GF_SECURITY_SECRET_KEY={PULUMI_SECRETS['grafanaSecretKey']}" in envs


# --- what Pulumi adds to compose's description ----------------------------------------------------

CONTAINER = "docker:index/container:Container"


def test_dependencies_come_first_and_healthy_ones_are_waited_for(deploy: Deploy) -> None:
    deployment = deploy()
    order = [r.name for r in deployment.resources if r.type == CONTAINER]
    # compose: the proxy starts once Ollama, Postgres and Redis are healthy.
    for dependency in ("ollama", "postgres", "redis"):
        assert order.index(dependency) < order.index("proxy")
        inputs = deployment.container(dependency).plain
        assert inputs["wait"] is True, f"{dependency} is not waited for"
        assert inputs["waitTimeout"] >= 60
    # Started, not healthy: Prometheus after the proxy, Grafana after Prometheus, no wait.
    assert order.index("proxy") < order.index("prometheus") < order.index("grafana")
    assert not deployment.container("proxy").plain.get("wait")


def test_the_stack_outputs_follow_the_published_ports(deploy: Deploy) -> None:
    assert deploy().outputs == {
        "proxy_url": "http://0.0.0.0:8000",
        "prometheus_url": "http://127.0.0.1:9090",
        "alertmanager_url": "http://127.0.0.1:9093",
        "grafana_url": "http://127.0.0.1:3000",
        "gpu": False,
        "models": ["llama3.2"],
        "engines": {},
    }
    configured = deploy(
        proxyPublishAddress="127.0.0.1", proxyPort="18000", grafanaBind="10.0.0.5", gpu="true",
        models='["mistral", "codellama:7b"]',
    )  # fmt: skip
    assert configured.outputs["proxy_url"] == "http://127.0.0.1:18000"
    assert configured.outputs["grafana_url"] == "http://10.0.0.5:3000"
    assert configured.outputs["gpu"] is True
    assert configured.outputs["models"] == ["mistral", "codellama:7b"]


def test_networks_and_volumes_keep_composes_docker_names(deploy: Deploy) -> None:
    deployment = deploy(namePrefix="llm-blue")
    assert {v.plain["name"] for v in deployment.volumes.values()} == {
        "llm-blue_ollama-models", "llm-blue_proxy-spool", "llm-blue_postgres-data",
        "llm-blue_prometheus-data", "llm-blue_alertmanager-data", "llm-blue_grafana-data",
    }  # fmt: skip
    assert all(n.plain["name"].startswith("llm-blue_") for n in deployment.networks.values())
    assert {c.plain["name"] for c in deployment.containers.values()} == {
        f"llm-blue-{name}" for name in deployment.containers
    }


def test_the_proxy_image_is_built_from_composes_build_section(deploy: Deploy) -> None:
    deployment = deploy(proxyImage="registry.example.org/llm-proxy:1.2.3")
    image = deployment.images["proxy"].plain
    assert image["imageName"] == "registry.example.org/llm-proxy:1.2.3"
    assert image["skipPush"] is True
    # docker-compose.yml's pinned base image, read from its build args.
    compose_build = rendered()["services"]["proxy"]["build"]
    assert image["build"]["args"] == compose_build["args"] != {}
    assert (REPO_ROOT / image["build"]["dockerfile"]).resolve() == REPO_ROOT / "proxy/Dockerfile"
    assert (REPO_ROOT / image["build"]["context"]).resolve() == REPO_ROOT
    assert deployment.container("proxy").plain["image"] == "registry.example.org/llm-proxy:1.2.3"
    assert "proxy" not in deployment.remote_images


def test_a_setting_set_with_secret_stays_secret(deploy: Deploy) -> None:
    issuer = "https://id.example.org/realms/private-0123456789"
    deployment = run_program({**PULUMI_SECRETS, "jwtIssuer": issuer},
                             secret_keys=(*PULUMI_SECRETS, "jwtIssuer"))  # fmt: skip
    for resource in deployment.resources:
        for part in plain_parts(resource.inputs):
            assert issuer not in str(part), f"{resource.name!r} has the issuer in clear"
    assert f"JWT_ISSUER={issuer}" in reveal(deployment.container("proxy").inputs["envs"])


def test_the_old_metrics_token_key_works_with_a_deprecation_warning(
    deploy: Deploy, caplog: pytest.LogCaptureFixture
) -> None:
    token = PULUMI_SECRETS["proxyMetricsToken"]
    deployment = deploy(without=("proxyMetricsToken",), metricsToken=token)
    assert "'metricsToken' is deprecated: it is now 'proxyMetricsToken'" in caplog.text
    assert f"PROXY_METRICS_TOKEN={token}" in reveal(deployment.container("proxy").inputs["envs"])
    for resource in deployment.resources:
        assert token not in " ".join(map(str, plain_parts(resource.inputs))), resource.name


def test_a_key_compose_does_not_declare_is_refused(deploy: Deploy) -> None:
    with pytest.raises(ConfigError, match=r"ollamaImage \(images are pinned in docker-compose"):
        deploy(ollamaImage="ollama/ollama:0.34.0")
    with pytest.raises(ConfigError, match="unknown stack config keys: ollamaMemoryLimt"):
        deploy(ollamaMemoryLimt="8g")
