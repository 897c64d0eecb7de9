"""Suite-wide hooks: every per-test timeout is stretched by TEST_TIME_SCALE
(tests/support/timing.py)."""

from __future__ import annotations

import pytest

from tests.support.timing import scaled


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    default = float(config.getini("timeout") or 0)
    for item in items:
        marker = item.get_closest_marker("timeout")
        if marker is None:
            base = default
        else:
            base = float(marker.args[0] if marker.args else marker.kwargs.get("timeout", default))
        if base > 0:
            # Prepended, so it is the closest marker pytest-timeout reads.
            item.add_marker(pytest.mark.timeout(scaled(base)), append=False)
