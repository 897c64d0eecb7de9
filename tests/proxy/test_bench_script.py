"""`scripts/bench --quick`: the benchmark runs end to end and its results file holds every row,
with numbers, for the simulator, the floor relay and every proxy configuration, and the limits
across replicas.
A smoke test of the script, so that the page can always be regenerated; no figure is judged
here (timings are not tests). And how a run of some rows merges into the figures kept."""

from __future__ import annotations

import json
import math
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.support.bench.page import ROWS as PAGE_ROWS
from tests.support.bench.page import merge_simulated, render
from tests.support.bench.simulated import CONFIGS, FLOOR, PROXY_ONLY_ROWS, ROWS
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
    assert set(run["targets"]) == {"direct", FLOOR, *CONFIGS}
    for name, figures in run["targets"].items():
        expected = set(ROWS) - (set(PROXY_ONLY_ROWS) if name in ("direct", FLOOR) else set())
        assert set(figures) == expected, name
        for row in expected:
            values = numbers(figures[row])
            assert values and all(math.isfinite(v) for v in values), (name, row, figures[row])
        for size in ("10", "20"):
            assert figures["bursts"][size]["errors"] == 0, (name, size, figures["bursts"][size])
        if name not in ("direct", FLOOR):
            audit = figures["audit"]
            assert audit["requests"] == run["counts"]["audit"], audit
            assert 0 < audit["stored"] <= audit["requests"], audit
    limits = json.loads((tmp_path / "benchmarks.json").read_text())["limits"]
    rate, tokens = limits["rate_limit"], limits["token_limit"]
    assert rate["admitted"] + rate["refused"] + rate["errors"] == rate["requests"] > 0, rate
    assert tokens["delivered"] > 0 and tokens["bound"] > tokens["limit"], tokens
    assert limits["budget"]["spent"] > 0 and limits["budget"]["admitted"] > 0, limits["budget"]
    page = (tmp_path / "benchmarks.md").read_text()
    for row in PAGE_ROWS:
        assert row.workload in page
    assert "| workload | direct | floor | sqlite |" in page
    assert "### Targets missed (current)" in page
    assert "## Limits across 2 replicas" in page


def simulated_run(command: str, targets: dict[str, dict[str, Any]]) -> dict[str, Any]:
    return {"written": "2026-12-01 00:00 UTC", "host": "x86_64", "commit": "abc1234",
            "command": command, "note": "", "counts": {}, "tokens": 16, "targets": targets}


def memory(requests: int, start: float, end: float) -> dict[str, Any]:
    return {"requests": requests, "start_mib": start, "end_mib": end, "errors": 0,
            "failures": {}}


def sequential(p50: float) -> dict[str, Any]:
    return {"p50_ms": p50, "p99_ms": 2 * p50, "errors": 0, "failures": {}}


def test_a_run_of_some_rows_keeps_the_other_figures_and_says_when_each_was_measured() -> None:
    kept = simulated_run("scripts/bench", {
        "direct": {"sequential": sequential(2.0)},
        "sqlite": {"sequential": sequential(4.0), "memory": memory(5000, 150, 151)},
        "pg-redis": {"sequential": sequential(5.0), "memory": memory(5000, 152, 152)}})
    later = simulated_run("scripts/bench --rows memory --configs pg-redis "
                          "--memory-requests 100000",
                          {"direct": {}, "pg-redis": {"memory": memory(100000, 152, 170)}})

    merged = merge_simulated(kept, later)

    assert merged["targets"]["pg-redis"]["memory"]["requests"] == 100000
    assert merged["targets"]["pg-redis"]["sequential"] == sequential(5.0)
    assert merged["targets"]["sqlite"] == kept["targets"]["sqlite"]
    assert merged["command"] == "scripts/bench"
    assert [(e["rows"], e["configs"]) for e in merged["later"]] == [(["memory"], ["pg-redis"])]
    page = render({"simulated": {"current": merged}})
    assert "  - memory of pg-redis, measured later" in page
    assert "152 → 170 MiB (1.12×) over 100000 requests" in page
    # The missed target names the command that measured it, count included.
    assert "`scripts/bench --rows memory --configs pg-redis --memory-requests 100000`" in page


def test_a_run_of_every_kept_figure_replaces_them() -> None:
    kept = simulated_run("scripts/bench", {"direct": {"sequential": sequential(2.0)},
                                           "sqlite": {"sequential": sequential(4.0)}})
    again = simulated_run("scripts/bench --rows sequential", {
        "direct": {"sequential": sequential(3.0)}, "sqlite": {"sequential": sequential(5.0)},
        "pg-redis": {"sequential": sequential(6.0)}})

    assert merge_simulated(kept, again) == again


def test_a_context_whose_figures_were_all_measured_again_is_no_longer_listed() -> None:
    def run(command: str, written: str, **targets: dict[str, Any]) -> dict[str, Any]:
        return {**simulated_run(command, targets), "written": written}

    merged = run("scripts/bench", "day 1", direct={"sequential": sequential(2.0)},
                 sqlite={"sequential": sequential(4.0), "memory": memory(5000, 150, 151)})
    memory_again = "scripts/bench --rows memory --configs sqlite"
    merged = merge_simulated(merged, run(memory_again, "day 2", direct={},
                                         sqlite={"memory": memory(9000, 150, 150)}))
    assert merged["written"] == "day 1"
    # The first run's figures have all been measured again: the earliest later run that is left
    # becomes the run's own.
    merged = merge_simulated(merged, run("scripts/bench --rows sequential", "day 3",
                                         direct={"sequential": sequential(3.0)},
                                         sqlite={"sequential": sequential(6.0)}))
    assert (merged["written"], merged["command"]) == ("day 2", memory_again)
    assert [e["written"] for e in merged["later"]] == ["day 3"]
    page = render({"simulated": {"current": merged}})
    assert "day 1" not in page and "day 2" in page and "day 3" in page
    # A later run whose figures a still later one measured again is dropped.
    merged = merge_simulated(merged, run(memory_again, "day 4", direct={},
                                         sqlite={"memory": memory(9000, 149, 149)}))
    merged = merge_simulated(merged, run(memory_again, "day 5", direct={},
                                         sqlite={"memory": memory(9000, 148, 148)}))
    assert merged["written"] == "day 3"
    assert [e["written"] for e in merged["later"]] == ["day 5"]
    assert merged["targets"]["sqlite"]["memory"]["end_mib"] == 148


def test_a_row_compared_with_direct_is_not_merged_for_some_configurations_only() -> None:
    kept = simulated_run("scripts/bench", {
        "direct": {"sequential": sequential(2.0)}, "sqlite": {"sequential": sequential(4.0)},
        "pg-redis": {"sequential": sequential(5.0)}})
    later = simulated_run("scripts/bench --rows sequential --configs pg-redis", {
        "direct": {"sequential": sequential(9.0)}, "pg-redis": {"sequential": sequential(11.0)}})

    with pytest.raises(ValueError, match="'sequential' is kept for sqlite"):
        merge_simulated(kept, later)


def test_the_limits_section_lists_a_missed_limit_with_its_measured_value() -> None:
    limits = {"written": "2026-12-01 00:00 UTC", "host": "x86_64", "commit": "abc1234",
              "command": "scripts/bench --rows limits", "note": "", "replicas": 2,
              "rate_limit": {"requests": 200, "limit": 10, "admitted": 11, "refused": 189,
                             "errors": 0},
              "token_limit": {"streams": 20, "limit": 1000, "count_every": 8, "windows": 1,
                              "delivered": 1100, "bound": 1140, "refused": 0, "stopped": 20,
                              "errors": 0},
              "budget": {"requests_per_round": 20, "rounds": 12, "budget": 0.5,
                         "request_cost": 0.05, "admitted": 10, "busy": 100, "spent": 0.5,
                         "admitted_cost": 0.5, "bound": 0.55, "errors": 0}}

    page = render({"limits": limits})

    missed = page.split("Targets missed:", 1)[1]
    assert "- rate limit: 200 requests at once from one user, 10/minute: 11 admitted" in missed
    assert "token limit" not in missed and "budget" not in missed
