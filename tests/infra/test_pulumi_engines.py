"""`engines`: the engine hosts the stack's proxy routes to, and those Pulumi deploys itself
(docker-compose.engine.yml on each one's own Docker host), under Pulumi's mocks."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest

from infra.config import ConfigError
from infra.engines import upstreams_document
from proxy.upstream.router import RoutingConfig
from tests.infra.pulumi_mocks import Deployment, reveal

Deploy = Callable[..., Deployment]
GPU_3 = {"name": "gpu-3", "url": "http://10.0.0.13:11435", "weight": 2,
         "dockerHost": "ssh://deploy@gpu-3.example.internal", "gpu": True}
ELSEWHERE = {"name": "gpu-4", "url": "http://10.0.0.14:11434"}


def proxy_env(deployment: Deployment) -> dict[str, str]:
    envs = reveal(deployment.container("proxy").inputs["envs"])
    return dict(item.split("=", 1) for item in envs)


def test_the_proxy_routes_to_its_own_ollama_and_every_engine(deploy: Deploy) -> None:
    deployment = deploy(engines=json.dumps([GPU_3, ELSEWHERE]), localEngineWeight="0.5")
    document = proxy_env(deployment)["PROXY_UPSTREAMS"]
    assert document == upstreams_document([
        {"name": "gpu-3", "url": "http://10.0.0.13:11435", "weight": 2},
        {"name": "gpu-4", "url": "http://10.0.0.14:11434"}], local_weight=0.5)
    routing = RoutingConfig.parse("PROXY_UPSTREAMS", document)
    assert [(u.name, u.weight) for u in routing.upstreams] == [
        ("local", 0.5), ("gpu-3", 2.0), ("gpu-4", 1.0)]
    assert deployment.outputs["engines"] == {"gpu-3": GPU_3["url"], "gpu-4": ELSEWHERE["url"]}


def test_an_engine_with_a_docker_host_is_deployed_there_as_the_stacks_ollama(
    deploy: Deploy,
) -> None:
    deployment = deploy(engines=json.dumps([GPU_3, ELSEWHERE]), ollamaMemoryLimit="20g")
    providers = deployment.of_type("pulumi:providers:docker")
    assert providers["engine-gpu-3"].plain["host"] == GPU_3["dockerHost"]
    assert "engine-gpu-4" not in providers  # deployed some other way (e.g. Ansible)

    engine = deployment.container("gpu-3-ollama").plain
    stack = deployment.container("ollama").plain
    assert engine["name"] == "llm-engine-ollama"
    assert engine["image"] == stack["image"]
    assert engine["memory"] == stack["memory"] == 20 * 1024
    assert [(p["external"], p["internal"]) for p in engine["ports"]] == [(11435, 11434)]
    assert engine["deviceRequests"][0]["capabilities"] == ["gpu"]
    assert not stack.get("ports"), "the stack's own Ollama stays unpublished"
    assert [n["name"] for n in engine["networksAdvanced"]] == ["llm-engine_engine"]
    assert not [name for name in deployment.containers if name.startswith("gpu-4-")]


def test_without_engines_the_proxy_keeps_its_one_ollama(deploy: Deploy) -> None:
    deployment = deploy()
    assert proxy_env(deployment)["PROXY_UPSTREAMS"] == ""
    assert deployment.outputs["engines"] == {}


@pytest.mark.parametrize(("config", "says"), [
    ({"engines": json.dumps({"name": "a"})}, "engines: expected a list"),
    ({"engines": json.dumps([{"name": "a", "url": "http://a:1", "host": "x"}])},
     r"engines\[1\]: unknown fields host"),
    ({"engines": json.dumps([{"name": "A B", "url": "http://a:1"}])}, "engines: engine 'A B'"),
    ({"engines": json.dumps([ELSEWHERE]), "proxyUpstreams": '{"upstreams": []}'},
     "engines and proxyUpstreams are both set"),
])
def test_an_engine_list_the_proxy_could_not_use_stops_the_program(
    deploy: Deploy, config: dict[str, str], says: str
) -> None:
    with pytest.raises(ConfigError, match=says):
        deploy(**config)
