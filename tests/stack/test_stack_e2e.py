"""End to end: the compose stack on this machine, checked by the host suite.

`local_stack` (conftest.py) brings the stack up with CI's stand-in images; the host suite's tests
(tests/hosts) are imported below so they run here against it, exactly as they run against a
real host with `pytest tests/hosts --hosts=ssh://…`. The checks proper to this machine's stack
follow.
"""

from __future__ import annotations

import pytest

from tests.hosts.target import StackHost
from tests.hosts.test_host_gpu import *  # noqa: F403
from tests.hosts.test_host_isolation import *  # noqa: F403
from tests.hosts.test_host_service import *  # noqa: F403
from tests.stack.conftest import CI_IMAGE_PREFIX, LocalStack

# The first test here also pays for bringing the stack up (image builds included on a cold
# machine); the teardown runs after the last. pytest-timeout counts both against a test.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(1500)]


def test_every_service_runs_and_is_healthy(local_stack: LocalStack) -> None:
    records = local_stack.services()

    assert sorted(records) == sorted(local_stack.images())
    # A service without a healthcheck has Health "" and must at least be running.
    failing = {
        name: (r["State"], r["Health"])
        for name, r in records.items()
        if r["State"] != "running" or r["Health"] not in ("healthy", "")
    }
    assert not failing, failing


def test_the_stack_runs_the_images_built_here(local_stack: LocalStack) -> None:
    # The CI override swaps images only; if a name did not match, compose would have tried to
    # pull (and failed) or run something else.
    images = {service: record["Image"] for service, record in local_stack.services().items()}

    assert images == {service: f"{CI_IMAGE_PREFIX}{service}:local" for service in images}


def test_the_ollama_stand_in_answers_the_cli_the_deployment_uses(stack: StackHost) -> None:
    # The compose healthcheck runs `ollama list`; the playbook pulls models with `ollama pull`.
    container = stack.container("ollama")

    assert stack.check_output("docker exec %s ollama list", container).startswith("NAME")
    pulled = stack.check_output("docker exec %s ollama pull %s", container, "llama3.2")
    assert pulled.splitlines()[-1] == "success"


def test_the_proxy_image_holds_no_simulator(stack: StackHost) -> None:
    # The image the stack runs, searched whole (not only the installed package): the Ollama
    # simulator lives with the tests and must never reach a production image.
    image = stack.inspect("proxy")["Config"]["Image"]
    found = stack.check_output(
        "docker run --rm --entrypoint /opt/venv/bin/python %s -c %s", image,
        "import os\n"
        "for root, dirs, files in os.walk('/'):\n"
        "    dirs[:] = [d for d in dirs if os.path.join(root, d) not in ('/proc', '/sys')]\n"
        "    for name in dirs + files:\n"
        "        if 'simulator' in name.lower(): print(os.path.join(root, name))\n"
        "print('searched', os.path.exists('/opt/venv/lib'))\n",
    )
    assert found.splitlines() == ["searched True"]
