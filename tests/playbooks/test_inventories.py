"""The inventories resolve the way Ansible will read them."""

from __future__ import annotations

import json
import re

from tests.playbooks.ansible_cli import CI_INVENTORY, EXAMPLE_INVENTORY, PLAYBOOKS, run_ansible

EXAMPLE = PLAYBOOKS / "inventories" / "example"


def inventory_list(inventory: object) -> dict[str, object]:
    result = run_ansible("ansible-inventory", "-i", inventory, "--list")
    assert result.returncode == 0, result.stderr
    return dict(json.loads(result.stdout))


def test_the_multi_host_example_resolves_with_its_groups_and_variables() -> None:
    result = run_ansible("ansible-inventory", "-i", EXAMPLE_INVENTORY, "--graph", "--vars")

    assert result.returncode == 0, result.stderr
    assert "[WARNING]" not in result.stderr, result.stderr
    graph = result.stdout
    for line in (
        "@llm_hosts:",
        "@llm_engines:",
        "gpu-3.example.internal",
        "@gpu:",
        "@cpu:",
        "gpu-1.example.internal",
        "cpu-1.example.internal",
    ):
        assert line in graph, graph
    hostvars = inventory_list(EXAMPLE_INVENTORY)["_meta"]["hostvars"]  # type: ignore[index]
    assert hostvars["gpu-1.example.internal"]["nvidia_require_gpu"] is True
    assert "nvidia_require_gpu" not in hostvars["cpu-1.example.internal"]
    assert hostvars["gpu-2.example.internal"]["stack_ollama_memory_limit"] == "24g"
    assert hostvars["cpu-1.example.internal"]["models_list"] == ["llama3.2"]


def test_every_secret_comes_from_the_vault_and_the_vault_example_names_them_all() -> None:
    settings = (EXAMPLE / "group_vars" / "all" / "main.yml").read_text()
    vault_example = (EXAMPLE / "group_vars" / "all" / "vault.yml.example").read_text()

    referenced = set(re.findall(r"\{\{ (vault_\w+) \}\}", settings))
    defined = set(re.findall(r"^(vault_\w+):", vault_example, re.MULTILINE))
    assert (
        referenced
        == defined
        == {
            "vault_stack_jwt_secret",
            "vault_stack_postgres_password",
            "vault_stack_proxy_db_password",
            "vault_stack_redis_password",
            "vault_stack_proxy_metrics_token",
            "vault_stack_grafana_admin_password",
            "vault_stack_grafana_secret_key",
        }
    )
    # The .example suffix keeps Ansible from loading the placeholders as real values.
    hostvars = inventory_list(EXAMPLE_INVENTORY)["_meta"]["hostvars"]  # type: ignore[index]
    assert "vault_stack_jwt_secret" not in hostvars["gpu-1.example.internal"]


def test_the_ci_inventory_runs_locally_from_the_distribution_without_a_gpu() -> None:
    hostvars = inventory_list(CI_INVENTORY)["_meta"]["hostvars"]["localhost"]  # type: ignore[index]

    assert hostvars["ansible_connection"] == "local"
    assert hostvars["docker_package_source"] == "distribution"
    assert hostvars["docker_manage_service"] is False
    assert hostvars["nvidia_require_gpu"] is False
    assert hostvars["stack_extra_compose_files"] == ["tests/stack/docker-compose.ci.yml"]
