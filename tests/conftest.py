"""Suite-wide hooks: every per-test timeout is stretched by TEST_TIME_SCALE
(tests/support/timing.py), and the tests that use this machine itself are marked `host`.

`host` tests deploy the stack or play the playbooks: they publish fixed ports (8000, 9090,
3000), and the site run restarts dockerd and refuses to start while other containers run, so
they run one at a time. Everything else (the proxy's tests use free ports, fresh databases and
their own users) may run beside them: scripts/test runs the two lanes, `-m host` and
`-m "not host"`, as two processes at once. Marked here by place, so a new test module in those
folders is a `host` test by default.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.timing import scaled

TESTS = Path(__file__).resolve().parent
# `host`: everything that runs containers, dockerd or ansible-playbook against this machine.
HOST_FOLDERS = (TESTS / "stack", TESTS / "playbooks")
# In those folders, modules that only read files and may run beside anything.
NOT_HOST = {TESTS / "playbooks" / name for name in (
    "test_lint.py", "test_role_docs.py", "test_inventories.py", "test_gpu_facts.py",
    "test_ollama_names.py", "test_models_pull.py")}


def uses_the_host(path: Path) -> bool:
    return path not in NOT_HOST and any(path.is_relative_to(f) for f in HOST_FOLDERS)


def pytest_itemcollected(item: pytest.Item) -> None:
    # As each test is collected, so that `-m host` / `-m "not host"` select by it.
    if uses_the_host(item.path):
        item.add_marker(pytest.mark.host)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    default = float(config.getini("timeout") or 0)
    for item in items:
        marker = item.get_closest_marker("timeout")
        options: dict[str, object] = {}
        if marker is None:
            base = default
        else:
            base = float(marker.args[0] if marker.args else marker.kwargs.get("timeout", default))
            # The marker's other settings (`func_only`, `method`) stay as the test set them.
            options = {k: v for k, v in marker.kwargs.items() if k != "timeout"}
        if base > 0:
            # Prepended, so it is the closest marker pytest-timeout reads.
            item.add_marker(pytest.mark.timeout(scaled(base), **options), append=False)
