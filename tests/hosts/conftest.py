"""The host suite: testinfra checks that hold on ANY host running the stack.

Against a real host (the stack deployed by Ansible, compose or Pulumi):

    .venv/bin/pytest tests/hosts --hosts=ssh://admin@gpu-host --sudo
    .venv/bin/pytest tests/hosts --hosts=local://          # on the host itself, as root

Settings (project name, proxy URL, JWT secret, model, GPU expectation) come from options or
`LLM_STACK_*` variables; see target.py. Commands run on the target through testinfra, so the host
needs docker, iproute2 (`ss`, `ip netns`), pciutils (`lspci`) and python3, and root (or `--sudo`).

Without a named host (`--hosts`, `--connection` or `--ansible-inventory`), the host-suite modules
are not collected here: `pytest` over the whole tree runs them in tests/stack/test_stack_e2e.py,
against a stack it brings up on this machine and tears down afterwards. The unit tests on
recorded output (test_host_gpu_facts.py) always run.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.hosts.target import StackHost, StackSettings, add_options

# The modules that need a deployed stack; see the module docstring.
HOST_SUITE_MODULES = ("test_host_isolation.py", "test_host_service.py", "test_host_gpu.py")


def pytest_addoption(parser: pytest.Parser) -> None:
    add_options(parser)


def host_named(config: pytest.Config) -> bool:
    return any(
        config.getoption(name, default=None)
        for name in ("hosts", "connection", "ansible_inventory")
    )


def pytest_ignore_collect(collection_path: Any, config: pytest.Config) -> bool | None:
    if collection_path.name in HOST_SUITE_MODULES and not host_named(config):
        return True
    return None


def pytest_report_header(config: pytest.Config) -> str | None:
    if host_named(config):
        return None
    return (
        "tests/hosts: no --hosts given, so the host suite runs in tests/stack against a local "
        "stack (name a host to test it directly)"
    )


@pytest.fixture(scope="session")
def stack_settings(pytestconfig: pytest.Config) -> StackSettings:
    """What the suite needs to know about the deployment; tests/stack overrides this."""
    return StackSettings.from_config(pytestconfig)


@pytest.fixture(scope="module")
def stack(host: Any, stack_settings: StackSettings) -> StackHost:
    return StackHost(host, stack_settings)
