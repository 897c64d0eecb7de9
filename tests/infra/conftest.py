"""Fixtures for the Pulumi program's tests.

`deploy(**config)`: `infra/__main__.py` run under Pulumi's mocks with these stack config keys
plus the dummy secrets (`without=("jwtSecret",)` leaves some out; `root=` runs a copy of the
repository); see pulumi_mocks.py.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from tests.infra.pulumi_mocks import Deployment, run_program
from tests.infra.stack_files import PULUMI_SECRETS, REPO_ROOT


@pytest.fixture
def deploy() -> Callable[..., Deployment]:
    def _deploy(
        *, without: tuple[str, ...] = (), root: Path = REPO_ROOT, **config: str
    ) -> Deployment:
        values = {k: v for k, v in PULUMI_SECRETS.items() if k not in without}
        return run_program({**values, **config}, root, secret_keys=tuple(values))

    return _deploy
