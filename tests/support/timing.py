"""One scale factor for every wait in the suite, so that a slow or busy machine can pass.

`TEST_TIME_SCALE` (default 1) multiplies every deadline, poll budget, client timeout and
per-test timeout the tests use; nothing else in the suite reads the clock's budget from
anywhere else. On a machine where the suite fails only because something took longer than
expected, raise it (`TEST_TIME_SCALE=3 scripts/test`): a real defect still fails, only later.

What is *not* scaled, on purpose: timings a test sets up to provoke a behaviour (a simulator's
token rate, a client timeout that must fire, a TTL the test waits out) and lower bounds
("took at least 0.35 s"), which a slow machine can only make easier to meet.
"""

from __future__ import annotations

import asyncio
import inspect
import os
import time
from collections.abc import Callable
from typing import Any

ENV_VAR = "TEST_TIME_SCALE"


def _read_scale() -> float:
    raw = os.environ.get(ENV_VAR, "1")
    try:
        scale = float(raw)
    except ValueError:
        raise SystemExit(f"{ENV_VAR}={raw!r} is not a number (e.g. {ENV_VAR}=3)") from None
    if scale < 1:
        raise SystemExit(f"{ENV_VAR}={raw!r} must be 1 or more: it only ever gives more time")
    return scale


TIME_SCALE = _read_scale()


def scaled(seconds: float) -> float:
    """`seconds` of budget, stretched by the scale factor."""
    return seconds * TIME_SCALE


def scaled_ms(seconds: float) -> float:
    """The same budget in milliseconds (Playwright's unit)."""
    return scaled(seconds) * 1000


def wait_until(check: Callable[[], Any], timeout: float = 10.0, interval: float = 0.05) -> Any:
    """Poll `check` until it returns something truthy; fail with its last value at the deadline.

    `timeout` is the budget on an idle machine; the scale factor stretches it.
    """
    budget = scaled(timeout)
    deadline = time.monotonic() + budget
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {budget:g} s (last: {result!r})")
        time.sleep(interval)


async def wait_until_async(check: Callable[[], Any], timeout: float = 10.0,
                           interval: float = 0.05) -> Any:
    """`wait_until` for tests that share their event loop with the app under test (the fast
    tier): the loop runs between polls, so the app's background work (the audit writer, the
    prune task) can make the condition true. `check` may return an awaitable."""
    budget = scaled(timeout)
    deadline = time.monotonic() + budget
    while True:
        result = check()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {budget:g} s (last: {result!r})")
        await asyncio.sleep(interval)
