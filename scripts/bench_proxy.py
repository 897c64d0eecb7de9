#!/usr/bin/env python3
"""Measure the latency the proxy adds over calling Ollama (the simulator) directly.

Starts the Ollama simulator and the proxy as separate processes on 127.0.0.1, then sends the same
requests both ways, interleaved so that machine noise hits both sides alike:
  - non-streaming generate: time to the complete answer;
  - streaming generate: time to the first token line, and to the last line.
Reports p50/p99 for each, the difference in milliseconds and the ratio proxy/direct, and writes a
markdown table to proxy/BENCHMARK.md (or --output). Figures are for comparison within one run:
the machine is shared and noisy, so absolute numbers vary between runs.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.support.proxy_process import start_proxy, stop_proxy  # noqa: E402
from tests.support.simulator.process import run_simulator  # noqa: E402
from tests.support.tokens import make_token  # noqa: E402


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def timed_stream(client: httpx.Client, url: str, body: dict[str, object],
                 headers: dict[str, str]) -> tuple[float, float]:
    start = time.perf_counter()
    first = None
    with client.stream("POST", url, json=body, headers=headers) as response:
        response.raise_for_status()
        for line in response.iter_lines():
            if line and first is None:
                first = time.perf_counter()
    end = time.perf_counter()
    assert first is not None
    return (first - start) * 1000, (end - start) * 1000


def timed_once(client: httpx.Client, url: str, body: dict[str, object],
               headers: dict[str, str]) -> float:
    start = time.perf_counter()
    client.post(url, json=body, headers=headers).raise_for_status()
    return (time.perf_counter() - start) * 1000


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=300, help="requests per series")
    parser.add_argument("--tokens", type=int, default=32, help="num_predict per request")
    parser.add_argument("--output", type=Path, default=REPO / "proxy" / "BENCHMARK.md")
    parser.add_argument("--append", action="store_true", help="append to the results file")
    parser.add_argument("--redis", metavar="URL", help="limits in Redis (e.g. "
                        "redis://127.0.0.1:6379/0) instead of in-process memory")
    args = parser.parse_args()

    token = make_token("bench", ttl=3600)
    auth = {"Authorization": f"Bearer {token}"}
    body_base = {"model": "llama3.2", "prompt": "benchmark",
                 "options": {"num_predict": args.tokens}}

    # A fast simulator, so that the proxy's own cost is not drowned by simulated generation.
    with run_simulator(first_token_delay=0.0, tokens_per_second=5000) as sim, \
            tempfile.TemporaryDirectory() as tmp:
        # Limits stay on (every request is checked and counted) but high enough to admit the
        # benchmark; audit rows and metrics are recorded as in production.
        env = {"OLLAMA_URL": sim.url, "PROXY_RATE_LIMIT": "1000000/minute",
               "PROXY_CONCURRENCY_LIMIT": "100", "PROXY_METRICS_TOKEN": "bench-metrics",
               **({"REDIS_URL": args.redis} if args.redis else {})}
        proxy = start_proxy(Path(tmp), env)
        proxy_url = proxy.url
        try:
            series: dict[str, list[float]] = {}

            def record(name: str, value: float) -> None:
                series.setdefault(name, []).append(value)

            with httpx.Client(timeout=60) as client:
                targets: list[tuple[str, str, dict[str, str]]] = [
                    ("direct", f"{sim.url}/api/generate", {}),
                    ("proxy", f"{proxy_url}/api/llm/generate", auth),
                ]
                for _ in range(20):  # warm-up: pools, imports, SQLite, JIT-free caches
                    for _, url, headers in targets:
                        timed_once(client, url, {**body_base, "stream": False}, headers)
                print(f"measuring {args.requests} requests per series...", file=sys.stderr)
                for i in range(args.requests):
                    for side, url, headers in targets:
                        record(f"{side} non-streaming total",
                               timed_once(client, url, {**body_base, "stream": False}, headers))
                        first, total = timed_stream(client, url, {**body_base, "stream": True},
                                                    headers)
                        record(f"{side} streaming first line", first)
                        record(f"{side} streaming total", total)
                    if (i + 1) % 50 == 0:
                        print(f"  {i + 1}/{args.requests}", file=sys.stderr)
        finally:
            stop_proxy(proxy)

    rows = []
    for what in ("non-streaming total", "streaming first line", "streaming total"):
        direct, through = series[f"direct {what}"], series[f"proxy {what}"]
        for q in (50, 99):
            d, p = percentile(direct, q), percentile(through, q)
            rows.append(f"| {what} | p{q} | {d:.2f} | {p:.2f} | {p - d:+.2f} | {p / d:.2f}× |")
    stdev = statistics.pstdev(series["proxy non-streaming total"])
    report = "\n".join([
        "# Proxy overhead benchmark",
        "",
        f"Written by `scripts/bench_proxy.py` on {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC "
        f"({platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}).",
        "",
        f"{args.requests} sequential requests per series, {args.tokens} tokens each, against the "
        "Ollama simulator at 5000 tokens/s and no first-token delay, so the figures are dominated "
        "by transport and proxy work (auth, validation, rate limit and concurrency checks, relay, "
        "metrics, audit rows written to SQLite). Limits are kept "
        f"{'in Redis' if args.redis else 'in process memory'}. Direct and proxied requests are "
        "interleaved. Milliseconds; compare the ratio, not the absolute values, between runs.",
        "",
        "| measure | pct | direct ms | via proxy ms | added ms | ratio |",
        "|---|---|---|---|---|---|",
        *rows,
        "",
        f"Proxy non-streaming standard deviation: {stdev:.2f} ms.",
        "",
    ])
    if args.output.exists() and args.append:
        report = args.output.read_text() + "\n" + report
    args.output.write_text(report)
    print(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
