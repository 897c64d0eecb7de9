"""The proxy against the Ollama simulator: the rows of the performance table, for each proxy
configuration and for the simulator called directly (the physical limit), interleaved.

Every proxy runs as in production: auth (a JWT on every request), rate and concurrency limits
(raised so that the benchmark is admitted, but checked and counted on every request), audit rows
and metrics. Configurations: `sqlite` (SQLite, limits in process memory), `pg-redis` (Postgres
and Redis, as deployed) and `pg-redis-w2` (the same with PROXY_WORKERS=2).

The `audit` row is the proxy's alone: a burst of non-streamed requests as fast as the driver
sends them, the audit rows the writer stores per second until the last one is in the database,
the writer's queue depth at its peak (`llm_proxy_audit_queue_depth`, read off /metrics during
the burst), and whether the database holds a row for every request.

`floor` (tests/support/bench/floor.py), a bare ASGI relay in front of the same simulator, is
measured in every run on the rows `direct` has, beside it: what any Python gateway on this
machine adds before doing any work of its own. Of the bursts only its errors (it has no
concurrency slots to leak).

With `peer`, a peer gateway (LiteLLM: tests/support/bench/peer.py) is measured on the same
rows as the simulator called directly, in its own API's shape; of the bursts only the errors
(it has no concurrency slots to leak).
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import aiohttp

from tests.support.bench import floor as floors
from tests.support.bench import peer as peers
from tests.support.bench.driver import (
    Outcome,
    Target,
    burst,
    concurrent,
    new_session,
    percentile,
    sequential,
)
from tests.support.database import count_rows_async, postgres_database
from tests.support.proxy_process import (
    ProxyProcess,
    metric_value,
    start_proxy,
    stop_proxy,
)
from tests.support.simulator.process import run_simulator
from tests.support.timing import scaled
from tests.support.tokens import make_token

REDIS_URL = "redis://127.0.0.1:6379/0"
CONFIGS = ("sqlite", "pg-redis", "pg-redis-w2")
ROWS = ("sequential", "clients8", "stream1", "streams50", "bursts", "memory", "audit")
# Rows of the proxy alone: the simulator called directly has no figure for them.
PROXY_ONLY_ROWS = ("memory", "audit")
# The bare relay (floor.py), measured in every run on the rows the simulator called directly is.
FLOOR = "floor"
TOKENS = 16  # num_predict: a short answer, so that the proxy's own cost is what is measured


@dataclass(frozen=True)
class Counts:
    """How many requests each row sends to each target."""

    warmup: int = 30
    sequential: int = 300
    clients8: int = 1200
    streams50: int = 1000
    bursts: tuple[int, ...] = (200, 500)
    memory: int = 5000
    audit: int = 3000
    audit_clients: int = 32
    rounds: int = 3  # each concurrent row is split in this many blocks per target, interleaved


QUICK = Counts(warmup=2, sequential=5, clients8=24, streams50=50, bursts=(10, 20), memory=40,
               audit=40, audit_clients=8, rounds=1)
AUDIT_POLL_SECONDS = 0.05


def ms(seconds: float) -> float:
    return round(seconds * 1000, 3)


def tally(outcomes: list[Outcome]) -> dict[str, Any]:
    """How many requests failed and, by status (0: no HTTP answer), how often and the first
    answer: a false 503 is a finding."""
    seen: dict[int, list[Outcome]] = {}
    for outcome in outcomes:
        if not outcome.ok:
            seen.setdefault(outcome.status, []).append(outcome)
    return {"errors": sum(len(found) for found in seen.values()),
            "failures": {str(status): f"{len(found)}× {found[0].detail[:120]}"
                         for status, found in sorted(seen.items())}}


def tree_rss_mib(pid: int) -> float:
    """Resident memory of a process and all its descendants (a server's workers), in MiB."""
    total = 0
    pending = [pid]
    while pending:
        current = pending.pop()
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{current}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
            for task in Path(f"/proc/{current}/task").iterdir():
                pending += [int(c) for c in (task / "children").read_text().split()]
    return round(total / 1024, 1)


class AuditWatch:
    """The audit side of one proxy: its database's row count, and its writer's queue depth on
    /metrics (summed over its workers)."""

    def __init__(self, session: aiohttp.ClientSession, proxy: ProxyProcess) -> None:
        self._session = session
        self._database = proxy.env["DATABASE_URL"]
        self._metrics = f"{proxy.url}/metrics"
        self._headers = {"Authorization": f"Bearer {proxy.env['PROXY_METRICS_TOKEN']}"}

    async def stored(self) -> int:
        return await count_rows_async(self._database, "SELECT COUNT(*) FROM audit_log")

    async def queue_depth(self) -> float:
        async with self._session.get(self._metrics, headers=self._headers) as response:
            return metric_value(await response.text(), "llm_proxy_audit_queue_depth")

    async def settled(self) -> int:
        """The row count once the writer's queue is empty (earlier rows' stragglers stored)."""
        deadline = time.monotonic() + scaled(30)
        while await self.queue_depth() and time.monotonic() < deadline:
            await asyncio.sleep(AUDIT_POLL_SECONDS)
        return await self.stored()


async def audit_burst(session: aiohttp.ClientSession, target: Target, proxy: ProxyProcess,
                      body: dict[str, Any], counts: Counts) -> dict[str, Any]:
    """`counts.audit` requests from `counts.audit_clients` clients at once; the rows stored per
    second from the first request until the database holds a row for each, and the queue's
    peak meanwhile."""
    watch = AuditWatch(session, proxy)
    before = await watch.settled()
    peak = 0.0

    async def sample_queue() -> None:
        nonlocal peak
        while True:
            peak = max(peak, await watch.queue_depth())
            await asyncio.sleep(AUDIT_POLL_SECONDS)

    sampler = asyncio.create_task(sample_queue())
    started = time.perf_counter()
    try:
        outcomes, wall = await concurrent(session, target, body, counts.audit_clients,
                                          counts.audit)
        # Every request is audited, refused or not: the count to wait for is every request.
        deadline = time.monotonic() + scaled(60)
        while (stored := await watch.stored() - before) < counts.audit \
                and time.monotonic() < deadline:
            await asyncio.sleep(AUDIT_POLL_SECONDS)
        elapsed = time.perf_counter() - started
    finally:
        sampler.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sampler
    return {"requests": counts.audit, "stored": stored,
            "rows_per_s": round(stored / elapsed, 1),
            "req_per_s": round(len(outcomes) / wall, 1),
            "peak_queue_depth": peak, **tally(outcomes)}


BEFORE = "@before"  # the suffix of a configuration running the --before code


def target_names(configs: list[str], before: bool) -> list[str]:
    """The proxies a run starts: each configuration, and with `--before` a twin of each
    single-process one."""
    return [*configs, *(config + BEFORE for config in configs
                        if before and not config.endswith("-w2"))]


def planned(configs: list[str], rows: tuple[str, ...], before: bool, peer: str | None = None
            ) -> dict[str, dict[str, Any]]:
    """The figures a run will hold, by target and row, before it measures them (values None)."""
    shared = {row: None for row in rows if row not in PROXY_ONLY_ROWS}
    return {"direct": shared, FLOOR: dict(shared), **({peer: dict(shared)} if peer else {}),
            **{name: dict.fromkeys(rows) for name in target_names(configs, before)}}


@contextlib.contextmanager
def proxies(configs: list[str], sim_url: str, counts: Counts, workdir: Path,
            before: Path | None) -> Iterator[dict[str, ProxyProcess]]:
    """Each configuration's proxy process, all running until the end; with `before` (a folder
    holding an earlier `proxy/`), a twin of each single-process configuration running that code,
    named `<configuration>@before`, measured in the same run."""
    biggest = max(counts.bursts)
    common = {
        "OLLAMA_URL": sim_url,
        # Limits on and counted, high enough to admit the benchmark.
        "PROXY_RATE_LIMIT": "1000000000/minute",
        "PROXY_CONCURRENCY_LIMIT": str(biggest),
        "OLLAMA_MAX_CONNECTIONS": str(2 * biggest),
        "PROXY_MAX_CONNECTIONS": str(4 * biggest),
        "PROXY_METRICS_TOKEN": secrets.token_hex(16),
        "PROXY_LOG_LEVEL": "warning",
        "PROXY_WORKERS": "1",
    }
    plan = [(name, name.removesuffix(BEFORE), before if name.endswith(BEFORE) else None)
            for name in target_names(configs, before is not None)]
    with contextlib.ExitStack() as stack:
        started: dict[str, ProxyProcess] = {}
        for name, config, code in plan:
            env = dict(common, **({"PYTHONPATH": str(code)} if code else {}))
            if config.startswith("pg-redis"):
                env["DATABASE_URL"] = stack.enter_context(
                    contextlib.contextmanager(postgres_database)("proxy_bench"))
                env["REDIS_URL"] = REDIS_URL
            if config.endswith("-w2"):
                env["PROXY_WORKERS"] = "2"
            folder = workdir / name
            folder.mkdir()
            proxy = start_proxy(folder, env)
            stack.callback(stop_proxy, proxy)
            started[name] = proxy
        yield started


async def measure(targets: list[Target], running: dict[str, ProxyProcess], counts: Counts,
                  rows: tuple[str, ...]) -> dict[str, dict[str, Any]]:
    """Every requested row, for every target; figures by target name, then row."""
    pids = {name: proxy.process.pid for name, proxy in running.items()}
    once = {"model": "llama3.2", "prompt": "benchmark", "options": {"num_predict": TOKENS},
            "stream": False}
    streamed = {**once, "stream": True}
    results: dict[str, dict[str, Any]] = {t.name: {} for t in targets}

    def say(text: str) -> None:
        print(f"bench: {text}", file=sys.stderr, flush=True)

    async def interleaved(body: dict[str, Any], clients: int, count: int
                          ) -> dict[str, tuple[list[Outcome], float]]:
        done: dict[str, tuple[list[Outcome], float]] = {t.name: ([], 0.0) for t in targets}
        for _ in range(counts.rounds):
            for target in targets:
                outcomes, wall = await concurrent(session, target, body, clients,
                                                  count // counts.rounds)
                done[target.name] = (done[target.name][0] + outcomes,
                                     done[target.name][1] + wall)
        return done

    async with new_session() as session:
        await sequential(session, targets, once, counts.warmup)
        await sequential(session, targets, streamed, counts.warmup)
        if "sequential" in rows:
            say(f"1 client, non-streamed: {counts.sequential} requests per target")
            for name, outcomes in (await sequential(session, targets, once,
                                                    counts.sequential)).items():
                totals = [o.total for o in outcomes if o.ok]
                results[name]["sequential"] = {
                    "p50_ms": ms(percentile(totals, 50)), "p99_ms": ms(percentile(totals, 99)),
                    **tally(outcomes)}
        if "clients8" in rows:
            say(f"8 clients, non-streamed: {counts.clients8} requests per target")
            for name, (outcomes, wall) in (await interleaved(once, 8, counts.clients8)).items():
                results[name]["clients8"] = {
                    "req_per_s": round(sum(o.ok for o in outcomes) / wall, 1),
                    **tally(outcomes)}
        if "stream1" in rows:
            say(f"1 client, streamed: {counts.sequential} requests per target")
            for name, outcomes in (await sequential(session, targets, streamed,
                                                    counts.sequential)).items():
                firsts = [o.first for o in outcomes if o.ok and o.first is not None]
                results[name]["stream1"] = {
                    "first_p50_ms": ms(percentile(firsts, 50)),
                    "first_p99_ms": ms(percentile(firsts, 99)), **tally(outcomes)}
        if "streams50" in rows:
            say(f"50 streams: {counts.streams50} requests per target")
            for name, (outcomes, wall) in (await interleaved(streamed, 50,
                                                             counts.streams50)).items():
                firsts = [o.first for o in outcomes if o.ok and o.first is not None]
                results[name]["streams50"] = {
                    "req_per_s": round(sum(o.ok for o in outcomes) / wall, 1),
                    "first_p50_ms": ms(percentile(firsts, 50)), **tally(outcomes)}
        if "bursts" in rows:
            for size in counts.bursts:
                say(f"{size} streams at once, then {size} requests at once for leaked slots")
                for target in targets:
                    outcomes = await burst(session, [target], streamed, size)
                    entry: dict[str, Any] = tally(outcomes)
                    if target.name in pids:
                        # Every slot is free again: as many requests as the cap all get in. A
                        # slot still held (leaked) turns one of them into a 429.
                        await asyncio.sleep(1.0)
                        check = await burst(session, [target], once, size)
                        entry["leaked_slots"] = sum(o.status == 429 for o in check)
                    results[target.name].setdefault("bursts", {})[str(size)] = entry
        if "memory" in rows:
            for target in targets:
                if target.name not in pids:
                    continue
                say(f"memory: {counts.memory} requests to {target.name}")
                before = tree_rss_mib(pids[target.name])
                outcomes, _ = await concurrent(session, target, once, 8, counts.memory)
                results[target.name]["memory"] = {
                    "requests": counts.memory, "start_mib": before,
                    "end_mib": tree_rss_mib(pids[target.name]), **tally(outcomes)}
        if "audit" in rows:
            for target in targets:
                if target.name in running:
                    say(f"audit: {counts.audit} requests to {target.name}, "
                        f"{counts.audit_clients} at a time")
                    results[target.name]["audit"] = await audit_burst(
                        session, target, running[target.name], once, counts)
    return results


@contextlib.contextmanager
def peer_targets(peer: str | None, sim_url: str, workdir: Path) -> Iterator[list[Target]]:
    """The peer gateway's target, running until the end (none without a peer)."""
    if peer is None:
        yield []
        return
    with peers.litellm(sim_url, workdir) as running:
        yield [Target(running.name, running.url, {"Authorization": f"Bearer {running.key}"},
                      shape=peers.openai_chat, sse=True)]


def run(configs: list[str], counts: Counts, rows: tuple[str, ...], before: Path | None = None,
        peer: str | None = None) -> dict[str, Any]:
    """Start the simulator, the floor relay, the peer gateway if any and every configuration's
    proxy, measure, stop them all."""
    if peer is not None:
        peers.install()  # before anything runs: the first time takes minutes
    token = make_token(f"bench-{secrets.token_hex(4)}", ttl=24 * 3600)
    auth = {"Authorization": f"Bearer {token}"}
    # A fast simulator: the generation itself takes next to no time, so what is measured is
    # transport and the proxy's own work. Enough parallel slots and queue that the simulator
    # is never what refuses a burst.
    with run_simulator(first_token_delay=0.0, tokens_per_second=100_000, num_parallel=64,
                       max_queue=4 * max(counts.bursts)) as sim, \
            tempfile.TemporaryDirectory(prefix="bench-") as tmp, \
            floors.running(sim.url, Path(tmp)) as floor_url, \
            peer_targets(peer, sim.url, Path(tmp)) as others, \
            proxies(configs, sim.url, counts, Path(tmp), before) as running:
        targets = [Target("direct", f"{sim.url}/api/generate"), Target(FLOOR, floor_url),
                   *others]
        targets += [Target(name, f"{proxy.url}/api/llm/generate", auth)
                    for name, proxy in running.items()]
        results = asyncio.run(measure(targets, running, counts, rows))
    extra = {"peer": peers.described(peer)} if peer else {}
    return {"counts": asdict(counts), "tokens": TOKENS, **extra, "targets": results}
