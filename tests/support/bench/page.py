"""The results of `scripts/bench`: one JSON file of figures, and the page made from it.

`benchmarks.json` holds the runs (`simulated`: one run per label, e.g. `before` and `current`;
`limits`: the last run of the limits across replicas; `real_model`: the last real-model run);
every run of the script merges its own into it and rewrites `benchmarks.md` from the whole
file, so a simulated run keeps the real-model figures and the other way round. A simulated run
of some rows only (`--rows memory --configs pg-redis`) is merged into the run kept under its
label, which keeps its other figures and lists the later run beside its own. The page lists
every figure, the command that reproduces it, and every target missed with its measured value.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from proxy.core.settings import Settings
from tests.support.bench.peer import PEERS
from tests.support.bench.simulated import CONFIGS, FLOOR, PROXY_ONLY_ROWS, Counts

Figures = dict[str, Any]  # one target's rows, as simulated.measure returns them
# The proxies measured run with the default.
FLUSH_SECONDS = Settings.model_fields["proxy_audit_flush_seconds"].default


@dataclass(frozen=True)
class Row:
    key: str  # the --rows name that reproduces it
    workload: str
    show: Callable[[Figures, Figures], str]  # (this target's figures, direct's) -> cell
    target: str
    # (figures, direct's, the peer gateway's of the same run or {}) -> the measured value,
    # when the target is missed; None when met
    missed: Callable[[Figures, Figures, Figures], str | None]


def _num(value: Any) -> float:
    return float(value) if isinstance(value, int | float) else math.nan


def _added(figures: Figures, direct: Figures, row: str, field: str) -> float:
    return _num(figures.get(row, {}).get(field)) - _num(direct.get(row, {}).get(field))


def _ratio(figures: Figures, direct: Figures, row: str, field: str) -> float:
    base = _num(direct.get(row, {}).get(field))
    return _num(figures.get(row, {}).get(field)) / base if base else math.nan


def _errors_suffix(figures: Figures, row: str) -> str:
    count = figures.get(row, {}).get("errors", 0)
    return f" ({count} errors)" if count else ""


def _sequential(f: Figures, d: Figures) -> str:
    if f is d:
        return f"{_num(f['sequential']['p50_ms']):.2f} / {_num(f['sequential']['p99_ms']):.2f} ms"
    return (f"{_added(f, d, 'sequential', 'p50_ms'):+.2f} / "
            f"{_added(f, d, 'sequential', 'p99_ms'):+.2f} ms"
            + _errors_suffix(f, "sequential"))


def _sequential_missed(f: Figures, d: Figures, _: Figures) -> str | None:
    p50, p99 = _added(f, d, "sequential", "p50_ms"), _added(f, d, "sequential", "p99_ms")
    if p50 <= 1 and p99 <= 3 and not f["sequential"]["errors"]:
        return None
    return _sequential(f, d)


def _clients8(f: Figures, d: Figures) -> str:
    rate = _num(f["clients8"]["req_per_s"])
    if f is d:
        return f"{rate:.0f}"
    return f"{rate:.0f} ({_ratio(f, d, 'clients8', 'req_per_s'):.2f}× direct)" + \
        _errors_suffix(f, "clients8")


CLIENTS8_FLOOR = 350  # req/s, the table's figure for "3× LiteLLM" when LiteLLM is not measured
PEER_FACTOR = 3


def clients8_floor(peer: Figures) -> float:
    """The 8-client target: 3× the peer gateway's rate of the same run when it was measured
    there, the table's 350 otherwise."""
    rate = _num(peer.get("clients8", {}).get("req_per_s"))
    return CLIENTS8_FLOOR if math.isnan(rate) else PEER_FACTOR * rate


def _clients8_missed(f: Figures, d: Figures, peer: Figures) -> str | None:
    ok = _num(f["clients8"]["req_per_s"]) >= clients8_floor(peer) and not f["clients8"]["errors"]
    return None if ok else _clients8(f, d)


def _stream1(f: Figures, d: Figures) -> str:
    if f is d:
        return f"{_num(f['stream1']['first_p50_ms']):.2f} ms"
    return f"{_added(f, d, 'stream1', 'first_p50_ms'):+.2f} ms" + _errors_suffix(f, "stream1")


def _stream1_missed(f: Figures, d: Figures, _: Figures) -> str | None:
    ok = _added(f, d, "stream1", "first_p50_ms") <= 1 and not f["stream1"]["errors"]
    return None if ok else _stream1(f, d)


def _streams50(f: Figures, d: Figures) -> str:
    rate = _num(f["streams50"]["req_per_s"])
    if f is d:
        return f"{rate:.0f}, first line {_num(f['streams50']['first_p50_ms']):.1f} ms"
    return (f"{rate:.0f} ({_ratio(f, d, 'streams50', 'req_per_s'):.2f}×), "
            f"{_added(f, d, 'streams50', 'first_p50_ms'):+.1f} ms"
            + _errors_suffix(f, "streams50"))


def _streams50_missed(f: Figures, d: Figures, _: Figures) -> str | None:
    ok = (_num(f["streams50"]["req_per_s"]) >= 250
          and _added(f, d, "streams50", "first_p50_ms") <= 20 and not f["streams50"]["errors"])
    return None if ok else _streams50(f, d)


def _bursts(f: Figures, d: Figures) -> str:
    cells = []
    for size, entry in f["bursts"].items():
        leaks = entry.get("leaked_slots")
        cells.append(f"{size}: {entry['errors']} errors"
                     + ("" if leaks is None else f", {leaks} leaked"))
    return "; ".join(cells)


def _bursts_missed(f: Figures, d: Figures, _: Figures) -> str | None:
    ok = all(not e["errors"] and not e.get("leaked_slots") for e in f["bursts"].values())
    return None if ok else _bursts(f, d)


def _memory(f: Figures, d: Figures) -> str:
    if "memory" not in f:
        return "—"
    m = f["memory"]
    growth = _num(m["end_mib"]) / _num(m["start_mib"]) if _num(m["start_mib"]) else math.nan
    return (f"{_num(m['start_mib']):.0f} → {_num(m['end_mib']):.0f} MiB ({growth:.2f}×) over "
            f"{m['requests']} requests" + _errors_suffix(f, "memory"))


def _memory_missed(f: Figures, d: Figures, _: Figures) -> str | None:
    m = f["memory"]
    # "Flat": at most 5 % more after the run than after the warm-up.
    ok = _num(m["end_mib"]) <= 1.05 * _num(m["start_mib"]) and not m["errors"]
    return None if ok else _memory(f, d)


def _audit(f: Figures, d: Figures) -> str:
    if "audit" not in f:
        return "—"
    a = f["audit"]
    return (f"{_num(a['rows_per_s']):.0f} rows/s ({_num(a['req_per_s']):.0f} req/s sent), "
            f"peak queue {_num(a['peak_queue_depth']):.0f}, {a['stored']} of {a['requests']} "
            "stored" + _errors_suffix(f, "audit"))


def _audit_missed(f: Figures, d: Figures, _: Figures) -> str | None:
    a = f["audit"]
    return None if a["stored"] == a["requests"] and not a["errors"] else _audit(f, d)


ROWS = (
    Row("sequential", "1 client, non-stream: added p50 / p99", _sequential,
        "≤ +1 / ≤ +3 ms", _sequential_missed),
    Row("clients8", "8 clients, non-stream: req/s", _clients8, "≥ 350 (3× LiteLLM)",
        _clients8_missed),
    Row("stream1", "1 client, stream: added time to first line (p50)", _stream1, "≤ +1 ms",
        _stream1_missed),
    Row("streams50", "50 streams: req/s, added first line p50", _streams50,
        "≥ 250, ≤ +20 ms", _streams50_missed),
    Row("bursts", "streams at once: errors, leaked slots", _bursts, "0 errors, 0 leaks",
        _bursts_missed),
    Row("memory", "RSS (proxy and its workers)", _memory, "flat (≤ +5 %)", _memory_missed),
    Row("audit", "audit burst: rows stored/s, writer queue at peak, rows stored", _audit,
        "a row per request", _audit_missed),
)


def _reproduce(row: str, config: str, figures: Figures, peers: dict[str, Figures]) -> str:
    """The command that measures one row of one configuration again, with the count it ran,
    and the peer gateway that the run measured on that row."""
    command = f"scripts/bench --rows {row} --configs {config}"
    command += "".join(f" --peer {name}" for name, kept in peers.items() if row in kept)
    requests = figures.get("memory", {}).get("requests", Counts.memory)
    if row == "memory" and requests != Counts.memory:
        command += f" --memory-requests {requests}"
    return command


def merge_simulated(kept: dict[str, Any] | None, new: dict[str, Any]) -> dict[str, Any]:
    """The run to keep under a label once `new` is measured: `new` itself when it measured
    everything `kept` holds; otherwise `kept` with `new`'s figures in place of its own, and
    `new`'s context listed under `later`.

    A row compared with `direct` is merged only when `new` measured it for every configuration
    `kept` has it for: otherwise some columns would be compared with another run's `direct`.
    The floor is measured in every run, as `direct` is: never asked for, and a kept run without
    its figures (older runs) merges as any other; its kept figures of a row that `new` measured
    are replaced by `new`'s, or dropped, never compared with another run's `direct`."""
    if kept is None or all(
            set(figures) <= set(new["targets"].get(name, {}))
            for name, figures in kept["targets"].items()):
        return new
    rows = sorted({row for figures in new["targets"].values() for row in figures})
    for row in rows:
        if row not in new["targets"].get("direct", {}):
            continue
        missing = [name for name, figures in kept["targets"].items()
                   if row in figures and name not in new["targets"] and name != FLOOR]
        if missing:
            how = "/".join(["--configs"] * any(n not in PEERS for n in missing)
                           + ["--peer"] * any(n in PEERS for n in missing))
            raise ValueError(
                f"row {row!r} is kept for {', '.join(missing)} too, compared with the same "
                f"direct figures: measure them in this run as well ({how}), or keep this "
                f"run apart (--label)")
    merged = {**kept, "targets": {name: dict(figures)
                                  for name, figures in kept["targets"].items()}}
    for name, figures in new["targets"].items():
        merged["targets"].setdefault(name, {}).update(figures)
    for row in new["targets"].get("direct", {}):
        if row not in new["targets"].get(FLOOR, {}):
            merged["targets"].get(FLOOR, {}).pop(row, None)
    later = {key: value for key, value in new.items() if key != "targets"}
    later["rows"] = rows
    later["configs"] = sorted((name for name in new["targets"] if name not in ("direct", FLOOR)),
                              key=_config_order)
    merged["later"] = [*kept.get("later", []), later]
    return without_superseded(merged)


def _pairs(entry: dict[str, Any]) -> set[tuple[str, str]]:
    """The (row, configuration) figures a later run measured."""
    return {(row, name) for row in entry["rows"] for name in entry["configs"]}


def without_superseded(run: dict[str, Any]) -> dict[str, Any]:
    """`run` without the contexts none of whose figures are left: a later run whose every
    figure a still later one measured again, and the run's own (its first) once later runs
    measured everything it held; then the earliest later run that is left becomes the run's
    own. The page lists each context it keeps, so it must keep only those still behind a
    figure."""
    later = run.get("later", [])
    kept = [entry for i, entry in enumerate(later)
            if _pairs(entry) - set().union(*(_pairs(e) for e in later[i + 1:]))]
    own = {(row, name) for name, figures in run["targets"].items()
           if name not in ("direct", FLOOR) for row in figures}
    pruned = dict(run)
    if kept and not own - set().union(*(_pairs(e) for e in kept)):
        first = kept.pop(0)
        pruned = {"targets": run["targets"],
                  **{k: v for k, v in first.items() if k not in ("rows", "configs")}}
    if kept:
        pruned["later"] = kept
    else:
        pruned.pop("later", None)
    return pruned


def _config_order(name: str) -> int:
    """Peer gateways first (beside direct), then the configurations in the order of CONFIGS."""
    if name in PEERS:
        return -1
    base = name.removesuffix("@before")
    return CONFIGS.index(base) if base in CONFIGS else len(CONFIGS)


def load(path: Path) -> dict[str, Any]:
    if path.exists():
        data: dict[str, Any] = json.loads(path.read_text())
        return data
    return {}


def save(path: Path, data: dict[str, Any]) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


def _peer_of(run: dict[str, Any]) -> dict[str, Any] | None:
    """The peer gateway a run measured, as it recorded it (the latest of a merged run)."""
    for entry in [*reversed(run.get("later", [])), run]:
        if entry.get("peer"):
            found: dict[str, Any] = entry["peer"]
            return found
    return None


def _peer_lines(peer: dict[str, Any], tokens: Any) -> list[str]:
    """What the peer gateway was configured to do, against what the proxies do."""
    not_measured = ", ".join(f"`{row}`" for row in PROXY_ONLY_ROWS)
    return [
        f"`{peer['name']}`: LiteLLM {peer['version']}'s proxy (`--peer {peer['name']}`), a peer "
        "gateway in front of the same simulator, installed in a virtual environment of its own "
        f"and called in OpenAI's shape on `{peer['route']}` (`max_tokens` {tokens}, the same "
        f"count). Configured to do: one model, `llama3.2` → "
        f"`{peer['model']}` with `api_base` the simulator; auth by a master key (a bearer key on "
        "every request); no database (DB-less: no audit or spend rows, no virtual keys, no "
        f"per-user limits or budgets); {peer['workers']} worker; logs at errors only. The "
        "proxies do auth (a JWT), rate and concurrency limits, an audit row per request and "
        "metrics. LiteLLM is measured on the rows `direct` is, interleaved with them; its bursts "
        f"count errors only (it has no concurrency slots to leak); not {not_measured} nor the "
        "limits across replicas, which are the proxy's own. Its time to the first line is to "
        "its first `data:` event, and a stream counts only when it ends with `data: [DONE]`. "
        "It is held to no target: its figure sets the 8-client one.",
        "",
    ]


def _target(row: Row, peer: Figures) -> str:
    """A row's target as the page states it: for 8 clients, 3× LiteLLM's figure of the run
    when it was measured, else the table's."""
    if row.key != "clients8" or "clients8" not in peer:
        return row.target
    return _peer_target(peer)


def _peer_target(peer: Figures) -> str:
    rate = _num(peer["clients8"]["req_per_s"])
    return f"≥ {clients8_floor(peer):.0f} ({PEER_FACTOR}× LiteLLM's {rate:.0f} of this run)"


def _simulated_section(runs: dict[str, Any]) -> list[str]:
    labels = sorted(runs, key=lambda label: (label != "before", label))

    def header(name: str, label: str) -> str:
        return name if len(labels) == 1 else f"{name} ({label})"

    # (header, label, figures): the floor of each run first, beside direct (an older run that
    # has none shows "—"), then each run's peer and proxies.
    columns = [(header(FLOOR, label), label, runs[label]["targets"].get(FLOOR, {}))
               for label in labels]
    for label in labels:
        # Each configuration beside its @before twin, in the order of CONFIGS.
        names = sorted((n for n in runs[label]["targets"] if n not in ("direct", FLOOR)),
                       key=lambda n: (_config_order(n), not n.endswith("@before")))
        columns += [(header(name, label), label, runs[label]["targets"][name]) for name in names]
    newest = runs[labels[-1]]
    direct = newest["targets"]["direct"]
    peers = {name: newest["targets"][name] for name in PEERS if name in newest["targets"]}
    # The peer whose figures set the targets (8 clients): the newest run's, {} if none.
    peer_figures = next(iter(peers.values()), {})
    peer = next((found for label in reversed(labels)
                 if (found := _peer_of(runs[label])) is not None), None)
    lines = [
        "## The proxy against the Ollama simulator",
        "",
        "`direct` is the simulator called without the proxy: the physical limit of this machine.",
        f"`{FLOOR}` is a bare ASGI relay in front of the same simulator (uvicorn with httptools, "
        "one kept-alive aiohttp session; no framework and no controls: no auth, limits, audit "
        "or metrics), shown as added over `direct` like the proxies and held to no target: what "
        "any Python gateway on this machine pays (its HTTP server, one more hop, its client) "
        "before doing any work of its own.",
        "Every proxy runs with auth (a JWT per request), rate and concurrency limits (raised to "
        "admit the load, but checked and counted on every request), audit rows and metrics. "
        "`sqlite`: SQLite, limits in process memory; `pg-redis`: Postgres and Redis; `-w2`: "
        "PROXY_WORKERS=2; `@before`: the same configuration running the code before the changes "
        "(`--before`), in the same run. Each proxy column is compared with the `direct` figures "
        "of its own run."
        + ("" if peer else " A peer gateway (LiteLLM 1.81 in the issue's table) is measured "
           "only with `--peer litellm`: not in this run."),
        "",
        *(_peer_lines(peer, newest.get("tokens")) if peer else []),
        "Audit burst: non-streamed requests from many clients at once; rows stored per second "
        "from the first request until the database holds a row for every one, so at most the "
        "rate they were sent at. The writer keeps up while its queue's peak stays near what "
        f"arrives in one flush interval (PROXY_AUDIT_FLUSH_SECONDS, {FLUSH_SECONDS} s), and "
        "falls behind "
        "when the peak grows with the burst.",
        "",
    ]
    for label in labels:
        run = runs[label]
        lines.append(f"- **{label}**: {run['written']}, {run['host']}, commit {run['commit']}; "
                     f"`{run['command']}`. {run.get('note', '')}".rstrip())
        for later in run.get("later", []):
            lines.append(
                f"  - {', '.join(later['rows'])} of {', '.join(later['configs'])}, measured "
                f"later: {later['written']}, {later['host']}, commit {later['commit']}; "
                f"`{later['command']}`. {later.get('note', '')}".rstrip())
    lines += [
        "",
        "| workload | direct | " + " | ".join(h for h, _, _ in columns)
        + " | target |",
        "|---|---|" + "---|" * len(columns) + "---|",
    ]
    for row in ROWS:
        if row.key not in direct and not any(row.key in f for _, _, f in columns):
            continue
        cells = [row.show(direct, direct) if row.key in direct else "—"]
        for _, label, figures in columns:
            own_direct = runs[label]["targets"]["direct"]
            cells.append(row.show(figures, own_direct) if row.key in figures else "—")
        lines.append(f"| {row.workload} | " + " | ".join(cells)
                     + f" | {_target(row, peer_figures)} |")
    lines += ["", "Reproduce one row: `scripts/bench --rows ROW` with ROW one of "
              + ", ".join(f"`{row.key}`" for row in ROWS)
              + " (`--configs` picks the proxy configurations"
              + (", `--peer litellm` adds LiteLLM" if peer else "") + ")."]
    if "clients8" in peer_figures:
        rate = _num(peer_figures["clients8"]["req_per_s"])
        lines += ["", f"The 8-client target used here is {PEER_FACTOR}× LiteLLM's {rate:.0f} "
                  f"req/s of the same run, ≥ {clients8_floor(peer_figures):.0f}, in place of "
                  f"the table's {CLIENTS8_FLOOR}."]
    lines += ["", f"### Targets missed ({labels[-1]})", ""]
    missed = []
    for config, figures in newest["targets"].items():
        if config in ("direct", FLOOR) or config.endswith("@before") or config in PEERS:
            continue
        for row in ROWS:
            if row.key in figures:
                value = row.missed(figures, direct, peer_figures)
                if value is not None:
                    missed.append(f"- {config}, {row.workload}: {value} (target "
                                  f"{_target(row, peer_figures)}); "
                                  f"`{_reproduce(row.key, config, figures, peers)}`")
    lines += missed or ["- none"]
    return lines


def _limits_section(run: dict[str, Any]) -> list[str]:
    rate, tokens = run["rate_limit"], run["token_limit"]
    rate_cell = (f"{rate['admitted']} admitted, {rate['refused']} refused (429), "
                 f"{rate['errors']} errors")
    rate_ok = (rate["admitted"] == rate["limit"] and rate["refused"] == rate["requests"]
               - rate["limit"] and not rate["errors"])
    windows = "" if tokens["windows"] == 1 else f" over {tokens['windows']} minute windows"
    token_cell = (f"{tokens['delivered']} tokens delivered{windows} (bound {tokens['bound']}); "
                  f"{tokens['stopped']} streams stopped by the limit, {tokens['refused']} "
                  f"refused, {tokens['errors']} errors")
    # Reached, not missed: the streams delivered at least the limit less what they had not
    # counted yet.
    reached = tokens["limit"] - tokens["streams"] * tokens["count_every"]
    token_ok = (reached < tokens["delivered"] <= tokens["bound"] and not tokens["errors"])
    budget = run["budget"]
    budget_cell = (f"spent {budget['spent']:g} (the proxy's count; {budget['admitted']} "
                   f"requests admitted × {budget['request_cost']:g} = "
                   f"{budget['admitted_cost']:g}), bound {budget['bound']:g}; "
                   f"{budget['rounds']} rounds, {budget['busy']} refused as busy, "
                   f"{budget['errors']} errors")
    budget_ok = (budget["budget"] - budget["request_cost"] < budget["spent"] <= budget["bound"]
                 and budget["admitted_cost"] <= budget["bound"] and not budget["errors"])
    rows = [
        (f"rate limit: {rate['requests']} requests at once from one user, "
         f"{rate['limit']}/minute", rate_cell,
         f"exactly {rate['limit']} admitted, the rest 429", rate_ok),
        (f"token limit: {tokens['streams']} streams at once from one user, "
         f"{tokens['limit']} tokens/minute", token_cell,
         f"reached, and ≤ the limit + {tokens['count_every'] - 1} per stream", token_ok),
        (f"budget: {budget['budget']:g} a day, rounds of {budget['requests_per_round']} "
         f"requests at once costing {budget['request_cost']:g} each", budget_cell,
         "spent, and ≤ the budget + one request's cost", budget_ok),
    ]
    lines = [
        f"## Limits across {run['replicas']} replicas",
        "",
        f"{run['written']}, {run['host']}, commit {run['commit']}; `{run['command']}`. "
        f"{run.get('note', '')}".rstrip(),
        "",
        f"{run['replicas']} proxy processes share one Postgres database and one Redis, as "
        "replicas behind a load balancer do; the requests of each measurement are sent all at "
        "once, in turn to each replica. A user's concurrency limit is raised above the burst, "
        "so that only the limit measured refuses. Tokens delivered: the generated tokens the "
        "streams carried (the simulator streams one per line); the bound is the README's "
        "(`PROXY_TOKEN_COUNT_EVERY - 1` per stream running when the limit is reached, "
        "prompts aside).",
        "",
        "| measurement | measured | target |",
        "|---|---|---|",
        *(f"| {name} | {cell} | {target} |" for name, cell, target, _ in rows),
        "",
        "Reproduce: `scripts/bench --rows limits`. Targets missed:",
        "",
    ]
    missed = [f"- {name}: {cell} (target {target})" for name, cell, target, ok in rows if not ok]
    return lines + (missed or ["- none"])


def _real_model_section(run: dict[str, Any]) -> list[str]:
    lines = [
        "## A real model: llama.cpp's llama-server (Gemma 3 270M, CPU) as an `openai` upstream",
        "",
        f"{run['written']}, {run['host']}, commit {run['commit']}; `{run['command']}`. "
        f"{run.get('note', '')}".rstrip(),
        "",
        "Streamed completions (`/v1/completions`) of up to "
        f"{run['tokens']} tokens each, temperature 0, of a prompt a base model counts on from, "
        f"{run['requests_per_user']} per user, every user sending its next request when its "
        f"last one ends; llama-server with {run['engine_threads']} thread(s) and a slot per "
        "user, the proxy on SQLite with its limits on. TTFT: from sending to the first "
        "content chunk; tokens/s: all users' completion tokens over the wall-clock time; "
        "P95: of whole-answer latency. "
        "The seed's targets (P95 < 5 s, TTFT < 1 s, 30–50 tokens/s) are for a GPU; on CPU "
        "the ratio to direct is what the proxy answers for.",
        "",
        "| users | direct TTFT p50 | proxy TTFT p50 | direct tokens/s | proxy tokens/s "
        "| direct P95 | proxy P95 | proxy/direct P95 | errors |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    # Keys of a JSON object are sorted as text ("1", "20", "5"): the table goes by number.
    for users, sides in sorted(run["users"].items(), key=lambda item: int(item[0])):
        d, p = sides["direct"], sides["proxy"]
        lines.append(
            f"| {users} | {d['ttft_p50_ms']:.0f} ms | {p['ttft_p50_ms']:.0f} ms | "
            f"{d['tokens_per_s']:.1f} | {p['tokens_per_s']:.1f} | {d['p95_ms']:.0f} ms | "
            f"{p['p95_ms']:.0f} ms | {p['p95_ms'] / d['p95_ms']:.2f}× | "
            f"{d['errors']} / {p['errors']} |")
    lines += ["", "Reproduce: `scripts/bench --real-model`."]
    return lines


def _clients_section(run: dict[str, Any]) -> list[str]:
    lines = [
        "## The upstream HTTP client alone: httpx or aiohttp",
        "",
        f"{run['written']}, {run['host']}; `{run['command']}`. {run.get('note', '')}".rstrip(),
        "",
        f"{run['requests']} requests per client and kind to the simulator, interleaved, one at a "
        "time on one keep-alive connection: the difference is each client's own work per "
        "request.",
        "",
        "| client | p50 | p99 |",
        "|---|---|---|",
    ]
    for name, figures in run["clients"].items():
        lines.append(f"| {name} | {figures['p50_ms']:.3f} ms | {figures['p99_ms']:.3f} ms |")
    return lines


def render(data: dict[str, Any]) -> str:
    lines = [
        "# Benchmarks",
        "",
        "Written by `scripts/bench` from `docs/benchmarks.json`; do not edit by hand. The "
        "machine is shared and noisy: compare figures within one run (ratios to direct), not "
        "across runs.",
        "",
    ]
    if data.get("simulated"):
        lines += _simulated_section(data["simulated"]) + [""]
    if data.get("limits"):
        lines += _limits_section(data["limits"]) + [""]
    if data.get("http_clients"):
        lines += _clients_section(data["http_clients"]) + [""]
    if data.get("real_model"):
        lines += _real_model_section(data["real_model"]) + [""]
    return "\n".join(lines)
