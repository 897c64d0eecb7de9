"""The routing document both deployment paths give the proxy (infra/engines.py): from Pulumi's
`engines` and from the Ansible inventory's engine hosts (the stack role's filter), identical for
the same engines, and one the proxy itself accepts."""

from __future__ import annotations

import json

import pytest

from infra.engines import EngineError, engine_name, engine_url, upstreams_document
from proxy.upstream.router import RoutingConfig
from tests.playbooks.ansible_cli import EXAMPLE_INVENTORY, ROLES, load_plugin, run_ansible

FILTER = ROLES / "stack" / "filter_plugins" / "engine_upstreams.py"


def test_no_engine_leaves_the_proxy_with_its_one_ollama() -> None:
    assert upstreams_document([]) == ""


def test_the_stacks_own_ollama_and_each_engine_the_proxy_accepts() -> None:
    document = upstreams_document(
        [{"name": "gpu-3", "url": "http://10.0.0.13:11434", "weight": 2}], local_weight=1)
    routing = RoutingConfig.parse("PROXY_UPSTREAMS", document)
    assert [(u.name, u.kind, u.url, u.weight) for u in routing.upstreams] == [
        ("local", "ollama", "http://ollama:11434", 1.0),
        ("gpu-3", "ollama", "http://10.0.0.13:11434", 2.0),
    ]
    assert "\n" not in document  # one line, for an env file


def test_local_weight_zero_leaves_the_stacks_ollama_out() -> None:
    document = upstreams_document([{"name": "gpu-3", "url": "http://10.0.0.13:11434"}], 0)
    assert [u["name"] for u in json.loads(document)["upstreams"]] == ["gpu-3"]


@pytest.mark.parametrize(("engines", "says"), [
    ([{"name": "GPU 3", "url": "http://a:1"}], "a name is lower-case"),
    ([{"name": "a", "url": "a:1"}], "must start with http://"),
    ([{"name": "a", "url": "http://a:1", "weight": 0}], "must be above 0"),
    ([{"name": "local", "url": "http://a:1"}], "must be unique"),
])
def test_an_engine_the_proxy_could_not_route_to_is_refused(
    engines: list[dict[str, object]], says: str
) -> None:
    with pytest.raises(EngineError, match=says):
        upstreams_document(engines)


def test_names_and_urls_from_hosts() -> None:
    assert engine_name("gpu-2.Example.internal") == "gpu-2-example-internal"
    assert engine_url("10.0.0.12", "11435") == "http://10.0.0.12:11435"
    assert engine_url("fd00::12") == "http://[fd00::12]:11434"


def test_the_ansible_filter_builds_the_same_document_from_the_example_inventory() -> None:
    listed = run_ansible("ansible-inventory", "-i", EXAMPLE_INVENTORY, "--list")
    assert listed.returncode == 0, listed.stderr
    inventory = json.loads(listed.stdout)
    engines = inventory["llm_engines"]["hosts"]
    plugin = load_plugin(FILTER)
    document = plugin.engine_upstreams(engines, inventory["_meta"]["hostvars"], 1)
    assert document == upstreams_document(
        [{"name": "gpu-3-example-internal", "url": "http://10.0.0.13:11434", "weight": 2}])
