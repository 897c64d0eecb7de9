"""`floor` in `scripts/bench`: the bare ASGI relay itself, in front of the simulator (answers in
the simulator's own shape, streams relayed line by line as they come), and how the page shows
its figures: beside `direct`, as added over it, held to no target, "—" for a run without it."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.support.bench import floor
from tests.support.bench.page import merge_simulated, render
from tests.support.bench.simulated import FLOOR, TOKENS, planned
from tests.support.simulator.process import SimulatorProcess
from tests.support.timing import scaled

BODY = {"model": "llama3.2", "prompt": "benchmark", "options": {"num_predict": TOKENS},
        "stream": False}


@pytest.fixture(scope="module")
def relay(simulator: SimulatorProcess, tmp_path_factory: pytest.TempPathFactory
          ) -> Iterator[str]:
    with floor.running(simulator.url, tmp_path_factory.mktemp("floor")) as running:
        yield running


def test_a_whole_answer_is_the_simulators_own(sim: SimulatorProcess, relay: str) -> None:
    relayed = httpx.post(relay, json=BODY, timeout=scaled(10))
    direct = httpx.post(f"{sim.url}/api/generate", json=BODY, timeout=scaled(10))

    assert relayed.status_code == direct.status_code == 200
    assert relayed.headers["content-type"] == direct.headers["content-type"]
    answer = relayed.json()
    assert answer.keys() == direct.json().keys()
    assert answer["done"] is True and answer["eval_count"] == TOKENS
    assert isinstance(answer["response"], str) and answer["response"]


def test_an_error_keeps_the_simulators_status_and_body(sim: SimulatorProcess, relay: str
                                                       ) -> None:
    unknown = {**BODY, "model": "no-such-model"}

    relayed = httpx.post(relay, json=unknown, timeout=scaled(10))
    direct = httpx.post(f"{sim.url}/api/generate", json=unknown, timeout=scaled(10))

    assert relayed.status_code == direct.status_code == 404
    assert relayed.json() == direct.json()


def test_a_stream_is_relayed_line_by_line_as_it_comes(sim: SimulatorProcess,
                                                      relay: str) -> None:
    sim.configure(tokens_per_second=20)  # 16 tokens: 0.75 s between the first and the last
    arrived: list[tuple[float, dict[str, Any]]] = []

    with httpx.stream("POST", relay, json={**BODY, "stream": True},
                      timeout=scaled(10)) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("application/x-ndjson")
        for line in response.iter_lines():
            if line:
                arrived.append((time.perf_counter(), json.loads(line)))

    lines = [line for _, line in arrived]
    assert len(lines) == TOKENS + 1
    assert all(not line["done"] for line in lines[:-1]) and lines[-1]["done"] is True
    # Relayed as the simulator sends them, not gathered first: the lines came over its pace.
    assert arrived[-1][0] - arrived[0][0] >= 0.5


def test_anything_but_a_generate_post_is_not_found(relay: str) -> None:
    base = relay.removesuffix(floor.PATH)

    assert httpx.get(relay, timeout=scaled(10)).status_code == 404
    assert httpx.post(f"{base}/api/chat", json=BODY, timeout=scaled(10)).status_code == 404


def test_the_floor_is_planned_on_the_rows_direct_has() -> None:
    plan = planned(["sqlite"], ("sequential", "bursts", "memory", "audit"), False)

    assert set(plan[FLOOR]) == set(plan["direct"]) == {"sequential", "bursts"}


def figures(p50: float, rate: float, first: float) -> dict[str, Any]:
    clean = {"errors": 0, "failures": {}}
    return {"sequential": {"p50_ms": p50, "p99_ms": 2 * p50, **clean},
            "clients8": {"req_per_s": rate, **clean},
            "stream1": {"first_p50_ms": first, "first_p99_ms": 2 * first, **clean},
            "streams50": {"req_per_s": rate, "first_p50_ms": 10 * first, **clean},
            "bursts": {"200": dict(clean)}}


def simulated_run(targets: dict[str, Any], command: str = "scripts/bench") -> dict[str, Any]:
    return {"written": "2026-12-01 00:00 UTC", "host": "x86_64", "commit": "abc1234",
            "command": command, "note": "", "counts": {}, "tokens": TOKENS, "targets": targets}


def test_the_floor_is_shown_beside_direct_as_added_over_it_and_misses_no_target() -> None:
    run = simulated_run({"direct": figures(2.0, 800, 1.0), "sqlite": figures(4.0, 200, 3.0),
                         FLOOR: figures(3.5, 300, 2.5)})

    page = render({"simulated": {"current": run}})

    assert "| workload | direct | floor | sqlite | target |" in page
    assert "`floor` is a bare ASGI relay" in page
    assert "| 1 client, non-stream: added p50 / p99 | 2.00 / 4.00 ms | +1.50 / +3.00 ms |" in page
    assert "| 800 | 300 (0.38× direct) | 200 (0.25× direct) |" in page
    assert "| 1.00 ms | +1.50 ms | +2.00 ms |" in page
    assert "| 800, first line 10.0 ms | 300 (0.38×), +15.0 ms |" in page
    missed = page.split("### Targets missed", 1)[1]
    # Over every proxy target, but the floor is held to none.
    assert "- sqlite, 1 client, non-stream" in missed and "floor" not in missed


def test_a_run_without_floor_figures_shows_a_dash() -> None:
    run = simulated_run({"direct": figures(2.0, 800, 1.0), "sqlite": figures(4.0, 200, 3.0)})

    page = render({"simulated": {"current": run}})

    assert "| workload | direct | floor | sqlite | target |" in page
    assert "| 1 client, non-stream: added p50 / p99 | 2.00 / 4.00 ms | — | +2.00 / +4.00 ms |" \
        in page


def test_a_kept_run_without_the_floor_takes_a_later_rows_floor_figures() -> None:
    kept = simulated_run({"direct": figures(2.0, 800, 1.0), "sqlite": figures(4.0, 200, 3.0)})
    later = simulated_run({"direct": {"sequential": figures(3.0, 0, 0)["sequential"]},
                           FLOOR: {"sequential": figures(3.5, 0, 0)["sequential"]},
                           "sqlite": {"sequential": figures(5.0, 0, 0)["sequential"]}},
                          "scripts/bench --rows sequential --configs sqlite")

    merged = merge_simulated(kept, later)

    assert merged["targets"][FLOOR] == later["targets"][FLOOR]
    assert [(e["rows"], e["configs"]) for e in merged["later"]] == [(["sequential"], ["sqlite"])]
    page = render({"simulated": {"current": merged}})
    assert "| 1 client, non-stream: added p50 / p99 | 3.00 / 6.00 ms | +0.50 / +1.00 ms |" in page
    assert "| 8 clients, non-stream: req/s | 800 | — | 200 (0.25× direct) |" in page


def test_kept_floor_figures_are_never_compared_with_another_runs_direct() -> None:
    kept = simulated_run({"direct": figures(2.0, 800, 1.0), FLOOR: figures(2.5, 600, 1.5),
                          "sqlite": figures(4.0, 200, 3.0)})
    # A later run of one row that has no floor figures (made by hand, or by older code).
    later = simulated_run({"direct": {"sequential": figures(3.0, 0, 0)["sequential"]},
                           "sqlite": {"sequential": figures(5.0, 0, 0)["sequential"]}})

    merged = merge_simulated(kept, later)

    assert "sequential" not in merged["targets"][FLOOR]
    assert merged["targets"][FLOOR]["clients8"] == kept["targets"][FLOOR]["clients8"]
