"""`scripts/bench --quick`: the benchmark runs end to end and its results file holds every row,
with numbers, for the simulator and every proxy configuration. A smoke test of the script, so
that the page can always be regenerated; no figure is judged here (timings are not tests)."""

from __future__ import annotations

import json
import math
import subprocess
from pathlib import Path

import pytest

from tests.support.bench.page import ROWS as PAGE_ROWS
from tests.support.bench.simulated import CONFIGS, ROWS
from tests.support.timing import scaled

pytestmark = pytest.mark.postgres

REPO_ROOT = Path(__file__).resolve().parents[2]


def numbers(value: object) -> list[float]:
    """Every number in a JSON value."""
    if isinstance(value, bool):
        return []
    if isinstance(value, int | float):
        return [float(value)]
    if isinstance(value, dict):
        return [n for v in value.values() for n in numbers(v)]
    if isinstance(value, list):
        return [n for v in value for n in numbers(v)]
    return []


def test_quick_run_writes_every_row(tmp_path: Path) -> None:
    done = subprocess.run(
        [str(REPO_ROOT / "scripts" / "bench"), "--quick", "--output-dir", str(tmp_path)],
        capture_output=True, text=True, timeout=scaled(300), check=False)
    assert done.returncode == 0, done.stderr[-4000:]
    run = json.loads((tmp_path / "benchmarks.json").read_text())["simulated"]["current"]
    assert set(run["targets"]) == {"direct", *CONFIGS}
    for name, figures in run["targets"].items():
        expected = set(ROWS) - ({"memory"} if name == "direct" else set())
        assert set(figures) == expected, name
        for row in expected:
            values = numbers(figures[row])
            assert values and all(math.isfinite(v) for v in values), (name, row, figures[row])
        for size in ("10", "20"):
            assert figures["bursts"][size]["errors"] == 0, figures["bursts"][size]
    page = (tmp_path / "benchmarks.md").read_text()
    for row in PAGE_ROWS:
        assert row.workload in page
    assert "### Targets missed (current)" in page
