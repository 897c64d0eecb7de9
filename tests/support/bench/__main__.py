"""`scripts/bench` (`python -m tests.support.bench`): see `--help`."""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import os
import platform
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.support.bench import page, peer, replicas, simulated

REPO = Path(__file__).resolve().parents[3]

# Rows of a section of their own, each measured in a setup of its own.
SECTIONS = ("limits",)
ROWS = simulated.ROWS + SECTIONS

DESCRIPTION = """\
Measure the proxy against the Ollama simulator (default) or a real model (--real-model), and
merge the figures into OUTPUT_DIR/benchmarks.json, from which OUTPUT_DIR/benchmarks.md is
rewritten; a run of some rows (--rows) keeps every other figure. Needs Postgres and Redis on
127.0.0.1 (scripts/services) for the pg-redis configurations and the limits row; the
real-model mode installs llama-server with scripts/real-model (minutes, once per machine).
"""


def _context(command: list[str], note: str) -> dict[str, Any]:
    """When and where the figures were measured, of which code, and how to measure them again."""
    commit = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
                            capture_output=True, text=True, check=False).stdout.strip()
    dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "--", "proxy"],
                           capture_output=True, text=True, check=False).stdout.strip()
    load = os.getloadavg()[0]
    return {
        "written": f"{dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC",
        "host": f"{platform.machine()}, {os.cpu_count()} CPUs, load {load:.1f} at the start, "
                f"Python {platform.python_version()}",
        "commit": commit + ("+changes" if dirty else ""),
        "command": shlex.join(["scripts/bench", *command]),
        "note": note,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scripts/bench", description=DESCRIPTION,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true",
                        help="tiny counts: a smoke test of the script, not a measurement")
    parser.add_argument("--configs", default="sqlite,pg-redis,pg-redis-w2",
                        help=f"proxy configurations, comma-separated, of {simulated.CONFIGS}")
    parser.add_argument("--rows", default=",".join(ROWS),
                        help=f"rows to measure, comma-separated, of {ROWS}")
    parser.add_argument("--label", default="current",
                        help="the name the figures are kept under (e.g. before, current)")
    parser.add_argument("--memory-requests", type=int,
                        help="requests of the memory row (default 5000; the issue's 100000 "
                             "takes about ten minutes per configuration)")
    parser.add_argument("--note", default="", help="a sentence kept with the figures")
    parser.add_argument("--real-model", action="store_true",
                        help="measure llama-server through the proxy against direct instead")
    parser.add_argument("--render", action="store_true",
                        help="only rewrite benchmarks.md from benchmarks.json")
    parser.add_argument("--http-clients", action="store_true",
                        help="measure the upstream HTTP clients alone (httpx, aiohttp) instead")
    parser.add_argument("--users", default="1,5,20",
                        help="real model: concurrent users, comma-separated")
    parser.add_argument("--tokens", type=int, default=32,
                        help="real model: completion tokens per request")
    parser.add_argument("--requests", type=int, default=2,
                        help="real model: requests per user at each level")
    parser.add_argument("--before", type=Path, metavar="DIR",
                        help="also measure the proxy code in DIR (a folder holding proxy/, e.g. "
                             "`git archive COMMIT proxy | tar -x -C DIR`), in the same run, as "
                             "<configuration>@before")
    parser.add_argument("--peer", choices=peer.PEERS,
                        help=f"also measure a peer gateway on the rows it has, in the same run: "
                             f"LiteLLM {peer.LITELLM_VERSION}, installed on first use in its own "
                             f"virtual environment under {peer.cache_dir()} (minutes, once)")
    parser.add_argument("--output-dir", type=Path, default=REPO / "docs")
    args = parser.parse_args(argv)
    given = sys.argv[1:] if argv is None else list(argv)
    # Where the figures went, and the note kept with them, are not how they were measured.
    aside = ("--output-dir", "--note")
    command = [a for i, a in enumerate(given) if not a.startswith(aside)
               and not (i and given[i - 1] in aside)]

    if args.peer and (args.real_model or args.http_clients or args.render):
        parser.error("--peer is measured against the simulator only")
    json_path = args.output_dir / "benchmarks.json"
    data = page.load(json_path)
    context = _context(command, args.note)
    if args.http_clients:
        from tests.support.bench import clients

        data["http_clients"] = {**context, **clients.run(50 if args.quick else 1000)}
    elif args.real_model:
        from tests.support.bench import real

        run = real.run([int(u) for u in args.users.split(",")], args.tokens, args.requests)
        data["real_model"] = {**context, **run}
    elif not args.render:
        configs = [c for c in args.configs.split(",") if c]
        rows = tuple(r for r in args.rows.split(",") if r)
        unknown = [c for c in configs if c not in simulated.CONFIGS] + \
            [r for r in rows if r not in ROWS]
        if unknown:
            parser.error(f"unknown configuration or row: {', '.join(unknown)}")
        counts = simulated.QUICK if args.quick else simulated.Counts()
        if args.memory_requests:
            counts = dataclasses.replace(counts, memory=args.memory_requests)
        table_rows = tuple(r for r in rows if r in simulated.ROWS)
        if args.peer and not set(table_rows) - set(simulated.PROXY_ONLY_ROWS):
            parser.error(f"--peer measures {args.peer} on rows it has: none of {args.rows}")
        if table_rows:
            runs = data.setdefault("simulated", {})
            try:  # refused before measuring, not after
                page.merge_simulated(runs.get(args.label), {"targets": simulated.planned(
                    configs, table_rows, args.before is not None, args.peer)})
            except ValueError as exc:
                parser.error(str(exc))
            run = {**context, **simulated.run(configs, counts, table_rows, args.before,
                                              args.peer)}
            runs[args.label] = page.merge_simulated(runs.get(args.label), run)
        if "limits" in rows:
            limit_counts = replicas.QUICK_LIMITS if args.quick else replicas.LimitCounts()
            data["limits"] = {**context, **replicas.run(limit_counts)}
    args.output_dir.mkdir(parents=True, exist_ok=True)
    page.save(json_path, data)
    text = page.render(data)
    (args.output_dir / "benchmarks.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
