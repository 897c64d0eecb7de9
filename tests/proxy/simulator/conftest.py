"""Shared by the simulator's test modules: each runs one simulator process (its own `sim`
fixture, with the settings it needs), reset before every test, and `client` speaks raw HTTP
to it."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.support.simulator import run_simulator
from tests.support.simulator.process import SimulatorProcess
from tests.support.timing import scaled


@contextlib.contextmanager
def module_simulator(**config: Any) -> Iterator[SimulatorProcess]:
    """`run_simulator` with start-up and control budgets stretched by the time scale."""
    with run_simulator(startup_timeout=scaled(15), control_timeout=scaled(5), **config) as sim:
        yield sim


@pytest.fixture(autouse=True)
def fresh(sim: SimulatorProcess) -> None:
    sim.reset(config=True)


@pytest.fixture
def client(sim: SimulatorProcess) -> Iterator[httpx.Client]:
    """Plain HTTP to the module's simulator, for the shapes the official clients hide."""
    with httpx.Client(base_url=sim.url, timeout=scaled(10)) as c:
        yield c
