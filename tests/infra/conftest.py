"""Fixtures for the Pulumi program's tests.

- `deploy(**config)`: `infra/__main__.py` rebuilt under Pulumi's mocks with these stack config
  keys plus the dummy secrets (`without=("jwtSecret",)` leaves some out); see mocked_program.py.
- `compose(*files, env=..., args=...)`: the real `docker-compose config`; see compose_render.py.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from tests.infra.compose_render import ComposeResult, render
from tests.infra.mocked_program import PULUMI_SECRETS, Deployment, run_program


@pytest.fixture
def deploy() -> Callable[..., Deployment]:
    def _deploy(*, without: tuple[str, ...] = (), **config: str) -> Deployment:
        values = {k: v for k, v in PULUMI_SECRETS.items() if k not in without}
        return run_program({**values, **config})

    return _deploy


@pytest.fixture
def compose(tmp_path: Path) -> Callable[..., ComposeResult]:
    def _compose(
        *files: Path,
        env: dict[str, str] | None = None,
        args: tuple[str, ...] = ("--format", "json"),
    ) -> ComposeResult:
        return render(tmp_path, *files, env=env, args=args)

    return _compose
