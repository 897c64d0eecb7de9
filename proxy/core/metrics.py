"""Prometheus metrics of the proxy (prometheus-client, one registry per app).

With several worker processes (PROXY_WORKERS, `core/workers.py`) prometheus-client's
multiprocess mode is on (PROMETHEUS_MULTIPROC_DIR): every process writes its values to files
there, and /metrics, whichever worker answers it, adds up all of them. Counters and histograms
sum over every worker that has lived (a restarted worker's counts are not lost); gauges say
how each is combined: in-flight and queue depths summed over the living workers, health as the
most recent worker's view.

Ollama has no /metrics, so the proxy is where latency, time to first token and tokens per second
become measurable. Names follow vLLM's vocabulary where one exists. Labels are bounded: endpoint
is a route template, model is a model upstream knows (or "unknown"/"none"), status a status code;
never a user id or a prompt.
"""

from __future__ import annotations

import os
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

PREFIX = "llm_proxy"
MULTIPROCESS_DIR = "PROMETHEUS_MULTIPROC_DIR"
LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 3, 5, 7.5, 10, 15, 20, 30, 60, 120, 300)
TTFT_BUCKETS = (0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1, 1.5, 2, 3, 5, 10, 30)
TPS_BUCKETS = (1, 5, 10, 15, 20, 25, 30, 35, 40, 50, 60, 80, 100, 150, 200, 400)


class ProxyMetrics:
    def __init__(self) -> None:
        self._children: dict[tuple[int, tuple[str, ...]], Any] = {}
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            f"{PREFIX}_requests",
            "Requests handled, by endpoint, model, status and API dialect (llm, openai, ollama).",
            ["endpoint", "model", "status", "api"], registry=r)
        self.request_duration = Histogram(
            f"{PREFIX}_request_duration_seconds",
            "End-to-end request latency, from receipt to the last byte sent.",
            ["endpoint", "model"], buckets=LATENCY_BUCKETS, registry=r)
        self.time_to_first_token = Histogram(
            f"{PREFIX}_time_to_first_token_seconds",
            "From request receipt to the first generated token.",
            ["model"], buckets=TTFT_BUCKETS, registry=r)
        self.prompt_tokens = Counter(
            f"{PREFIX}_prompt_tokens", "Prompt tokens evaluated upstream.", ["model"], registry=r)
        self.generation_tokens = Counter(
            f"{PREFIX}_generation_tokens", "Tokens generated upstream.", ["model"], registry=r)
        self.tokens_per_second = Histogram(
            f"{PREFIX}_generation_tokens_per_second",
            "Upstream generation speed per request (eval_count / eval_duration).",
            ["model"], buckets=TPS_BUCKETS, registry=r)
        self.in_flight = Gauge(
            f"{PREFIX}_requests_in_flight", "Requests being handled now.", ["endpoint"],
            registry=r, multiprocess_mode="livesum")
        self.rate_limited = Counter(
            f"{PREFIX}_rate_limited", "Requests refused by a limit (rate or concurrency).",
            ["limit"], registry=r)
        self.limiter_errors = Counter(
            f"{PREFIX}_limiter_backend_errors",
            "Limit checks that could not reach their storage (Redis).", ["mode"], registry=r)
        self.auth_failures = Counter(
            f"{PREFIX}_auth_failures", "Failed authentications, by reason.", ["reason"],
            registry=r)
        self.cache = Counter(
            f"{PREFIX}_cache_requests", "Response cache lookups, by result (hit/miss).",
            ["result"], registry=r)
        self.upstream_up = Gauge(
            f"{PREFIX}_upstream_up", "1 if the last contact with Ollama succeeded.", registry=r,
            multiprocess_mode="livemostrecent")
        self.upstream_healthy = Gauge(
            f"{PREFIX}_upstream_healthy", "1 if the upstream (engine) is in rotation.",
            ["upstream"], registry=r, multiprocess_mode="livemostrecent")
        self.upstream_in_flight = Gauge(
            f"{PREFIX}_upstream_requests_in_flight", "Generations running on each upstream.",
            ["upstream"], registry=r, multiprocess_mode="livesum")
        self.upstream_requests = Counter(
            f"{PREFIX}_upstream_requests", "Generations sent to each upstream (retries too).",
            ["upstream"], registry=r)
        self.upstream_failures = Counter(
            f"{PREFIX}_upstream_failures",
            "Upstream failures that count against its health (not unknown models, not 4xx).",
            ["upstream"], registry=r)
        self.upstream_ejections = Counter(
            f"{PREFIX}_upstream_ejections",
            "Times an upstream was taken out of rotation after failures in a row.",
            ["upstream"], registry=r)
        # Teams are few and named by admins, so a team label is bounded; users and keys are
        # not, so they are counted, never labelled.
        self.team_budget_spend = Gauge(
            f"{PREFIX}_team_budget_spend", "What a team has spent in its budget's current "
            "period (cost model's currency).", ["team", "period"], registry=r)
        self.team_budget_limit = Gauge(
            f"{PREFIX}_team_budget_limit", "A team's budget per period (hard limit).",
            ["team", "period"], registry=r)
        self.team_budget_soft_limit = Gauge(
            f"{PREFIX}_team_budget_soft_limit", "A team's soft limit per period (a warning).",
            ["team", "period"], registry=r)
        self.budget_soft_limit_crossed = Counter(
            f"{PREFIX}_budget_soft_limit_crossings",
            "Budgets that went past their soft limit, by scope (user, key, team).", ["scope"],
            registry=r)
        self.keys_near_limit = Gauge(
            f"{PREFIX}_api_keys_near_limit", "API keys at 90% or more of a limit of their own "
            "(tokens_per_minute, tokens_per_day, budget).", ["limit"], registry=r)
        self.audit_queue_depth = Gauge(
            f"{PREFIX}_audit_queue_depth", "Audit rows waiting to be written.", registry=r,
            multiprocess_mode="livesum")
        self.audit_spooled_rows = Gauge(
            f"{PREFIX}_audit_spooled_rows",
            "Audit rows in the local spool file, waiting for the database.", registry=r,
            multiprocess_mode="livesum")
        self.audit_written = Counter(
            f"{PREFIX}_audit_rows_written", "Audit rows stored in the database.", registry=r)
        self.audit_rejected = Counter(
            f"{PREFIX}_audit_rows_rejected",
            "Audit rows the database refused as data (kept in the dead-letter file).",
            registry=r)

    def child(self, metric: Any, *values: str) -> Any:
        """`metric.labels(*values)` (values in the order of its label names), remembered: a
        request touches a handful of children, and prometheus-client checks and converts the
        values and takes a lock on each look-up. Label values are bounded (see the module), so
        is what is remembered; no child is ever removed from these metrics."""
        key = (id(metric), values)
        found = self._children.get(key)
        if found is None:
            found = self._children[key] = metric.labels(*values)
        return found

    def render(self) -> bytes:
        if os.environ.get(MULTIPROCESS_DIR):
            # Every worker's values, from their files (this process's registry holds its own).
            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
            return generate_latest(registry)
        return generate_latest(self.registry)
