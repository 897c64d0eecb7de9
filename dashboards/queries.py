"""PromQL of the rules and dashboards, written once and parametrised by window.

Alert and recording rules call these with fixed windows (`config.WINDOWS`); dashboards call them
with Grafana's `$__rate_interval`, so a panel and the rule behind an alert compute the same
thing. Layout (what goes where on which dashboard) is in `layouts/`; nothing here knows it.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import PurePosixPath

from dashboards.config import GPU_EXPECTED_METRIC, SELECTORS

S = SELECTORS
DASHBOARD_WINDOW = "$__rate_interval"
# Grafana's multi-value variable on the overview; rules never filter by model.
MODEL_VARIABLE = 'model=~"$model"'


def select(metric: str, *matchers: str) -> str:
    """`metric{a, b}` from matcher strings; empty ones are dropped."""
    return f"{metric}{{{', '.join(m for m in matchers if m)}}}"


def by(labels: Iterable[str]) -> str:
    names = list(labels)
    return f" by ({', '.join(names)})" if names else ""


def rate_sum(metric: str, window: str, labels: Iterable[str] = (), *matchers: str) -> str:
    return f"sum{by(labels)} (rate({select(metric, *matchers)}[{window}]))"


def quantile(q: float, bucket: str, window: str, labels: Iterable[str] = (),
             *matchers: str) -> str:
    grouping = ["le", *labels]
    return f"histogram_quantile({q}, {rate_sum(bucket, window, grouping, *matchers)})"


# --- the proxy: requests, latency, tokens ---------------------------------------------------

GENERATION = f'endpoint=~"{S.generation_endpoints}"'


def proxy_up() -> str:
    return select("up", S.proxy)


def proxy_absent() -> str:
    return f"absent({proxy_up()})"


def upstream_up() -> str:
    return select("llm_proxy_upstream_up", S.proxy)


def request_rate(window: str, labels: Iterable[str] = (), *matchers: str) -> str:
    return rate_sum("llm_proxy_requests_total", window, labels, S.proxy, *matchers)


def error_ratio(window: str, labels: Iterable[str] = (), *matchers: str) -> str:
    """5xx answers over the requests that were not refused as client errors.

    4xx (bad token, invalid input, unknown model, 413, and 429 from the limits) are the caller's
    doing or the limits working; they are neither failures nor part of the base, so a flood of
    bad tokens cannot dilute a real outage into a small ratio.
    """
    labels = list(labels)
    failed = request_rate(window, labels, 'status=~"5.."', *matchers)
    served = request_rate(window, labels, 'status!~"4.."', *matchers)
    return f"{failed}\n/\n{served}"


def latency_quantile(q: float, window: str, labels: Iterable[str] = (), *matchers: str) -> str:
    return quantile(q, "llm_proxy_request_duration_seconds_bucket", window, labels, S.proxy,
                    GENERATION, *matchers)


def ttft_quantile(q: float, window: str, labels: Iterable[str] = (), *matchers: str) -> str:
    return quantile(q, "llm_proxy_time_to_first_token_seconds_bucket", window, labels, S.proxy,
                    *matchers)


def tokens_per_second_quantile(q: float, window: str, labels: Iterable[str] = ("model",),
                               *matchers: str) -> str:
    return quantile(q, "llm_proxy_generation_tokens_per_second_bucket", window, labels,
                    S.proxy, *matchers)


def generations(window: str, labels: Iterable[str] = ("model",), *matchers: str) -> str:
    """Completed generations (each observes one tokens/s sample) in `window`."""
    metric = select("llm_proxy_generation_tokens_per_second_count", S.proxy, *matchers)
    return f"sum{by(labels)} (increase({metric}[{window}]))"


def token_rate(kind: str, window: str, labels: Iterable[str] = ("model",), *matchers: str) -> str:
    """Tokens per second through the proxy; `kind` is "prompt" or "generation"."""
    return rate_sum(f"llm_proxy_{kind}_tokens_total", window, labels, S.proxy, *matchers)


def in_flight(labels: Iterable[str] = ()) -> str:
    return f"sum{by(labels)} ({select('llm_proxy_requests_in_flight', S.proxy)})"


# --- the engines behind the proxy (proxy/upstream/router.py) ----------------------------------


def upstream_healthy() -> str:
    """1 per engine in rotation; with several proxy replicas, the worst view of each engine."""
    return f"min by (upstream) ({select('llm_proxy_upstream_healthy', S.proxy)})"


def upstream_in_flight() -> str:
    return f"sum by (upstream) ({select('llm_proxy_upstream_requests_in_flight', S.proxy)})"


def upstream_rate(kind: str, window: str) -> str:
    """Per engine: `requests`, `failures` or `ejections` per second."""
    return rate_sum(f"llm_proxy_upstream_{kind}_total", window, ("upstream",), S.proxy)


def cache_hit_ratio(window: str) -> str:
    hits = rate_sum("llm_proxy_cache_requests_total", window, (), S.proxy, 'result="hit"')
    lookups = rate_sum("llm_proxy_cache_requests_total", window, (), S.proxy)
    return f"{hits} / {lookups}"


def rate_limited_rate(window: str, labels: Iterable[str] = ()) -> str:
    return rate_sum("llm_proxy_rate_limited_total", window, labels, S.proxy)


def rate_limited_ratio(window: str) -> str:
    return f"{rate_limited_rate(window)} / {request_rate(window)}"


def auth_failure_rate(window: str, labels: Iterable[str] = ()) -> str:
    return rate_sum("llm_proxy_auth_failures_total", window, labels, S.proxy)


def limiter_error_rate(window: str, labels: Iterable[str] = ()) -> str:
    return rate_sum("llm_proxy_limiter_backend_errors_total", window, labels, S.proxy)


def audit_spooled_rows() -> str:
    return select("llm_proxy_audit_spooled_rows", S.proxy)


def audit_queue_depth() -> str:
    return select("llm_proxy_audit_queue_depth", S.proxy)


def audit_rows_written_rate(window: str) -> str:
    return rate_sum("llm_proxy_audit_rows_written_total", window, (), S.proxy)


# --- GPU (nvidia_gpu_exporter: every series is labelled by `uuid`; the name is on gpu_info) ---

def gpu_info() -> str:
    return select("nvidia_smi_gpu_info", S.gpu)


def gpu_metric(metric: str) -> str:
    return select(metric, S.gpu)


def gpu_expected() -> str:
    return f"max({select(GPU_EXPECTED_METRIC, S.node)})"


def gpu_named(metric: str) -> str:
    """`metric` per GPU with the card's `name` added, for legends."""
    return f"{select(metric, S.gpu)} * on (uuid) group_left (name) {gpu_info()}"


def gpu_memory_ratio() -> str:
    used = select("nvidia_smi_memory_used_bytes", S.gpu)
    total = select("nvidia_smi_memory_total_bytes", S.gpu)
    return f"{used} / {total}"


# --- containers (cAdvisor names a container by its Docker name, label `name`) ------------------

OLLAMA = f'name=~"{S.ollama_container}"'
STACK_CONTAINERS = f'name=~"{S.stack_containers}"'


def ollama_working_set() -> str:
    return f"max by (name) ({select('container_memory_working_set_bytes', S.cadvisor, OLLAMA)})"


def ollama_memory_limit() -> str:
    # 0 means "no limit"; dropping it keeps the ratio from dividing by zero.
    limit = select("container_spec_memory_limit_bytes", S.cadvisor, OLLAMA)
    return f"max by (name) ({limit} > 0)"


def ollama_memory_ratio() -> str:
    return f"{ollama_working_set()}\n/\n{ollama_memory_limit()}"


def container_cpu(window: str) -> str:
    return rate_sum("container_cpu_usage_seconds_total", window, ("name",), S.cadvisor,
                    STACK_CONTAINERS)


def container_memory() -> str:
    metric = select("container_memory_working_set_bytes", S.cadvisor, STACK_CONTAINERS)
    return f"max by (name) ({metric})"


# --- the host (node exporter with --path.rootfs, so mount points are the host's) --------------

def models_mountpoints() -> list[str]:
    """The mount points that can hold the models volume, deepest first: the data root and each
    of its parents (`/var/lib/docker`, `/var/lib`, `/var`, `/`)."""
    root = PurePosixPath(S.docker_data_root)
    return [str(p) for p in (root, *root.parents)]


def _filesystem(metric: str, mountpoint: str) -> str:
    return select(metric, S.node, f'mountpoint="{mountpoint}"', f'fstype!~"{S.ignored_fstypes}"')


def models_filesystem_used_ratio() -> str:
    """Used fraction of the filesystem that holds Docker's volumes.

    Node exporter lists filesystems by mount point, not by directory, and which mount point
    holds `/var/lib/docker` differs per host (a dedicated disk, `/var`, or just `/`). Each
    candidate is tried deepest first; `or on (instance)` keeps a shallower one only where no
    deeper one exists, so exactly the filesystem Docker writes to is watched.
    """
    terms = [
        f"(1 - {_filesystem('node_filesystem_avail_bytes', m)}"
        f" / {_filesystem('node_filesystem_size_bytes', m)})"
        for m in models_mountpoints()
    ]
    return "\nor on (instance)\n".join(terms)


def node_cpu_used(window: str) -> str:
    idle = select("node_cpu_seconds_total", S.node, 'mode="idle"')
    return f"1 - avg by (instance) (rate({idle}[{window}]))"


def node_memory_used_ratio() -> str:
    available = select("node_memory_MemAvailable_bytes", S.node)
    total = select("node_memory_MemTotal_bytes", S.node)
    return f"1 - {available} / {total}"


def exporter_up() -> str:
    return select("up", f'job=~"{S.exporter_jobs}"')



def team_budget_ratio() -> str:
    """Spend over budget per team and period. Every replica reports the same value from Redis
    (or, without Redis, its own share): the largest is the truest."""
    labels = ("team", "period")
    return (f"max{by(labels)} ({select('llm_proxy_team_budget_spend', S.proxy)})\n"
            f"/ max{by(labels)} ({select('llm_proxy_team_budget_limit', S.proxy)})")


def keys_near_limit() -> str:
    return f"max by (limit) ({select('llm_proxy_api_keys_near_limit', S.proxy)})"
