"""The three dashboards: which panel goes where, with which query and which target line.

Queries come from `queries.py` (PromQL) and `audit_queries.py` (SQL), thresholds from
`config.py`; this module only arranges them.
"""

from __future__ import annotations

from dashboards import audit_queries as sql
from dashboards import panels as p
from dashboards import queries as q
from dashboards.config import ABUSE, DASHBOARD_UIDS, LIMITS, SELECTORS, TARGETS
from dashboards.panels import Json

W = q.DASHBOARD_WINDOW
M = q.MODEL_VARIABLE

LATENCY_TARGET = p.below_is_good(TARGETS.latency_p95_seconds)
TTFT_TARGET = p.below_is_good(TARGETS.ttft_p95_seconds)
ERROR_TARGET = p.below_is_good(TARGETS.error_ratio)
CONCURRENCY_TARGET = p.steps((None, "green"), (TARGETS.concurrent_requests, "orange"))
SPEED_TARGET = p.steps(
    (None, "red"),
    (TARGETS.tokens_per_second_p50_min, "green"),
    (TARGETS.tokens_per_second_p50_good, "dark-green"),
)


def overview() -> Json:
    t = TARGETS
    stats = [
        (3, p.stat("Proxy", "Whether Prometheus can scrape the proxy (up{job=\"proxy\"}).",
                   "none", p.prometheus(f"min({q.proxy_up()})"),
                   thresholds=p.steps((None, "red"), (1, "green")),
                   mappings=p.up_down("UP", "DOWN"))),
        (3, p.stat("Ollama", "Whether the proxy's last contact with Ollama succeeded.",
                   "none", p.prometheus(f"min({q.upstream_up()})"),
                   thresholds=p.steps((None, "red"), (1, "green")),
                   mappings=p.up_down("UP", "DOWN"))),
        (3, p.stat("Requests/s", "Requests handled per second, every endpoint and status.",
                   "reqps", p.prometheus(q.request_rate(W, (), M)), decimals=2)),
        (3, p.stat("Error ratio", f"5xx over all requests that were not 4xx; target below "
                   f"{t.error_ratio:.0%}. 429 (limits) and other client errors do not count.",
                   "percentunit", p.prometheus(q.error_ratio(W, (), M)),
                   thresholds=ERROR_TARGET, decimals=2)),
        (3, p.stat("P95 latency", f"95th percentile of generate/chat end-to-end latency; "
                   f"target below {t.latency_p95_seconds:g} s.",
                   "s", p.prometheus(q.latency_quantile(0.95, W, (), M)),
                   thresholds=LATENCY_TARGET)),
        (3, p.stat("P95 first token", f"95th percentile of the time to the first token; "
                   f"target below {t.ttft_p95_seconds:g} s.",
                   "s", p.prometheus(q.ttft_quantile(0.95, W, (), M)),
                   thresholds=TTFT_TARGET)),
        (3, p.stat("Median tokens/s", f"Median generation speed over all models; target "
                   f"{t.tokens_per_second_p50_min:g}-{t.tokens_per_second_p50_good:g} tokens/s.",
                   p.TOKENS_PER_SECOND, p.prometheus(q.tokens_per_second_quantile(0.5, W, (), M)),
                   thresholds=SPEED_TARGET, decimals=1)),
        (3, p.stat("In flight", f"Requests being handled now; sized for "
                   f"{t.concurrent_requests} concurrent users.",
                   "short", p.prometheus(q.in_flight()), thresholds=CONCURRENCY_TARGET)),
    ]
    rows: list[p.Row] = [
        (4, stats),
        (8, [
            (12, p.timeseries(
                "Requests by model", "Requests per second through the proxy, by model "
                "(`unknown`: a model Ollama does not have; `none`: no model, e.g. /models).",
                "reqps", [p.prometheus(q.request_rate(W, ("model",), M), "{{model}}")])),
            (12, p.timeseries(
                "Requests by status", "Requests per second by HTTP status: 401/403 "
                "authentication, 422 invalid input, 429 limits, 5xx failures.",
                "reqps", [p.prometheus(q.request_rate(W, ("status",), M), "{{status}}")])),
        ]),
        (8, [
            (12, p.timeseries(
                "Error ratio by model", f"5xx over non-4xx requests, by model; the dashed "
                f"line is the {t.error_ratio:.0%} target.",
                "percentunit", [p.prometheus(q.error_ratio(W, ("model",), M), "{{model}}")],
                thresholds=ERROR_TARGET)),
            (12, p.timeseries(
                "Generation latency", f"P50, P95 and P99 end-to-end latency of generate, "
                f"chat and WebSocket requests; dashed: the {t.latency_p95_seconds:g} s P95 "
                f"target. Streamed answers count until their last token.",
                "s", [p.prometheus(q.latency_quantile(x, W, (), M), f"p{round(x * 100)}")
                      for x in (0.5, 0.95, 0.99)],
                thresholds=LATENCY_TARGET)),
        ]),
        (8, [
            (12, p.timeseries(
                "Time to first token by model", f"P50 and P95 time from request to first "
                f"token, by model; dashed: the {t.ttft_p95_seconds:g} s target. A model "
                f"being loaded into memory shows up here.",
                "s", [p.prometheus(q.ttft_quantile(x, W, ("model",), M),
                                   f"{{{{model}}}} p{round(x * 100)}") for x in (0.5, 0.95)],
                thresholds=TTFT_TARGET)),
            (12, p.timeseries(
                "Generation speed by model", f"Median tokens per second generated "
                f"(Ollama's eval_count / eval_duration), by model; dashed: the "
                f"{t.tokens_per_second_p50_min:g} and {t.tokens_per_second_p50_good:g} "
                f"tokens/s marks.",
                p.TOKENS_PER_SECOND,
                [p.prometheus(q.tokens_per_second_quantile(0.5, W, ("model",), M),
                              "{{model}}")],
                thresholds=SPEED_TARGET)),
        ]),
        (8, [
            (12, p.timeseries(
                "In-flight requests by endpoint", f"Requests being handled now, by route; "
                f"dashed: {t.concurrent_requests} concurrent users, what the stack is sized "
                f"for.",
                "short", [p.prometheus(q.in_flight(("endpoint",)), "{{endpoint}}")],
                thresholds=CONCURRENCY_TARGET)),
            (12, p.timeseries(
                "Tokens through the proxy", "Prompt tokens evaluated and tokens generated "
                "per second, by model.",
                p.TOKENS_PER_SECOND,
                [p.prometheus(q.token_rate("prompt", W, ("model",), M), "{{model}} prompt"),
                 p.prometheus(q.token_rate("generation", W, ("model",), M),
                              "{{model}} generated")])),
        ]),
        (8, [
            (8, p.timeseries(
                "Response cache hit ratio", "Share of cache lookups answered from the cache "
                "(only non-streamed, deterministic requests are looked up).",
                "percentunit", [p.prometheus(q.cache_hit_ratio(W), "hit ratio")],
                max_value=1)),
            (8, p.timeseries(
                "Audit rows waiting", "Audit rows queued in memory, and rows spooled to the "
                "local file while Postgres is unreachable (should be 0).",
                "short", [p.prometheus(q.audit_queue_depth(), "queue {{instance}}"),
                          p.prometheus(q.audit_spooled_rows(), "spool {{instance}}")])),
            (8, p.timeseries(
                "Audit rows written", "Audit rows stored in Postgres per second: one per API "
                "request, so it follows the request rate.", "suffix: rows/s",
                [p.prometheus(q.audit_rows_written_rate(W), "written")])),
        ]),
    ]
    return p.dashboard(
        DASHBOARD_UIDS.overview, "LLM overview",
        "Traffic, errors, latency, time to first token and generation speed of the LLM "
        "proxy, against the service targets.",
        rows,
        [p.query_variable("model", "Model",
                          f"label_values({q.select('llm_proxy_requests_total', SELECTORS.proxy)}"
                          ", model)")],
    )


COST_HELP = (
    "Cost uses the gpu_time model of the admin API: upstream seconds of uncached requests, "
    "priced with the dashboard variables GPU hour and hardware month (set them to "
    "PROXY_COST_GPU_HOUR and PROXY_COST_HARDWARE_MONTH)."
)


def users_and_cost() -> Json:
    rows: list[p.Row] = [
        (10, [(24, p.table(
            "Users", "Per user over the selected range, from the audit log: requests, errors "
            "(4xx/5xx except 429), rate-limited, cached, tokens, P95 latency of successful "
            "requests, GPU seconds and cost — the numbers GET /api/admin/usage?group_by=user "
            f"reports. {COST_HELP}",
            "short", p.sql(sql.USERS_TABLE),
            columns={"p95_latency_s": ("s", 2), "gpu_seconds": ("s", 1), "cost": ("none", 4)},
            sort_by="requests"))]),
        (8, [
            (8, p.bar_gauge(
                "Top users by tokens", "Prompt plus completion tokens per user over the "
                "selected range (audit log).", "short", p.sql(sql.TOP_USERS_BY_TOKENS),
                field="tokens")),
            (8, p.bar_gauge(
                "Top users by cost", f"Cost per user over the selected range. {COST_HELP}",
                "none", p.sql(sql.TOP_USERS_BY_COST), field="cost", decimals=4)),
            (8, p.timeseries(
                "Active users", "Distinct authenticated users with at least one request per "
                "interval (audit log).", "short", [p.sql(sql.ACTIVE_USERS, table=False)],
                datasource=p.AUDIT)),
        ]),
        (8, [
            (12, p.timeseries(
                "Requests per user", "Requests per interval of the top users of the selected "
                "range (audit log).", "short", [p.sql(sql.REQUESTS_PER_USER, table=False)],
                datasource=p.AUDIT)),
            (12, p.table(
                "Tokens by user and model", "Requests, tokens and GPU seconds per user and "
                "model over the selected range (audit log).", "short",
                p.sql(sql.TOKENS_BY_USER_AND_MODEL), columns={"gpu_seconds": ("s", 1)},
                sort_by="completion_tokens")),
        ]),
        (8, [
            (8, p.timeseries(
                "Rate-limited requests", "Requests refused with 429, by limit (rate: "
                "requests per window; concurrency: generations at once). Dashed: the "
                f"{ABUSE.rate_limited_per_second:g}/s floor of the spike alert.",
                "reqps", [p.prometheus(q.rate_limited_rate(W, ("limit",)), "{{limit}}")],
                thresholds=p.below_is_good(ABUSE.rate_limited_per_second))),
            (8, p.timeseries(
                "Authentication failures", "Failed authentications per second, by reason "
                "(expired, signature, missing_token, audience, ...). Dashed: the spike "
                "alert's threshold.",
                "reqps", [p.prometheus(q.auth_failure_rate(W, ("reason",)), "{{reason}}")],
                thresholds=p.below_is_good(ABUSE.auth_failures_per_second))),
            (8, p.timeseries(
                "Tokens per model", "Tokens generated per second, by model (Prometheus; "
                "the per-user split is in the tables above).", p.TOKENS_PER_SECOND,
                [p.prometheus(q.token_rate("generation", W), "{{model}}")])),
        ]),
    ]
    return p.dashboard(
        DASHBOARD_UIDS.users, "LLM users and cost",
        "Who uses the models and what it costs: per-user numbers from the audit log in "
        "Postgres (the metrics have no user label, by design), limits and authentication "
        "from Prometheus.",
        rows,
        [
            p.custom_variable("top_n", "Top", ["5", "10", "20", "50"], "10"),
            p.textbox_variable("cost_gpu_hour", "GPU hour", "0",
                               "Price of one GPU hour (PROXY_COST_GPU_HOUR)."),
            p.textbox_variable("cost_hardware_month", "Hardware month", "0",
                               "Amortised hardware per month (PROXY_COST_HARDWARE_MONTH)."),
        ],
    )


def gpu_and_host() -> Json:
    gpu_expected_map = [{
        "type": "value",
        "options": {"0": {"color": "text", "index": 1, "text": "no (CPU host)"},
                    "1": {"color": "blue", "index": 0, "text": "yes"}},
    }]
    rows: list[p.Row] = [
        (4, [
            (4, p.stat("GPU expected", "Whether this deployment asked for a GPU (node "
                       "exporter textfile written by the GPU compose override or Pulumi "
                       "gpu: true).", "none", p.prometheus(q.gpu_expected()),
                       mappings=gpu_expected_map)),
            (4, p.stat("GPUs detected", "Cards the GPU exporter reports; 0 on a host that "
                       "expects a GPU raises GpuNotDetected.", "short",
                       p.prometheus(f"count({q.gpu_info()}) or vector(0)"))),
            (4, p.stat("GPU utilisation", "Mean utilisation over the host's GPUs.",
                       "percentunit",
                       p.prometheus(f"avg({q.gpu_metric('nvidia_smi_utilization_gpu_ratio')})"))),
            (4, p.stat("GPU memory", f"Fullest GPU's memory in use; alert above "
                       f"{LIMITS.gpu_memory_ratio:.0%}.", "percentunit",
                       p.prometheus(f"max({q.gpu_memory_ratio()})"),
                       thresholds=p.below_is_good(LIMITS.gpu_memory_ratio))),
            (4, p.stat("Ollama memory", f"Ollama's working set over its container memory "
                       f"limit; alert above {LIMITS.ollama_memory_ratio:.0%}.", "percentunit",
                       p.prometheus(f"max({q.ollama_memory_ratio()})"),
                       thresholds=p.below_is_good(LIMITS.ollama_memory_ratio))),
            (4, p.stat("Models disk", f"Used share of the filesystem holding Docker's "
                       f"volumes; alert above {LIMITS.models_disk_ratio:.0%}.", "percentunit",
                       p.prometheus(f"max({q.models_filesystem_used_ratio()})"),
                       thresholds=p.below_is_good(LIMITS.models_disk_ratio))),
        ]),
        (8, [
            (12, p.timeseries(
                "GPU utilisation", "Share of time the GPU was busy (nvidia-smi "
                "utilization.gpu), per card.", "percentunit",
                [p.prometheus(q.gpu_named("nvidia_smi_utilization_gpu_ratio"),
                              "{{name}} {{uuid}}")], max_value=1)),
            (12, p.timeseries(
                "GPU memory", "Memory in use and total, per card. Ollama keeps a loaded "
                "model resident for OLLAMA_KEEP_ALIVE.", "bytes",
                [p.prometheus(q.gpu_named("nvidia_smi_memory_used_bytes"), "used {{name}}"),
                 p.prometheus(q.gpu_named("nvidia_smi_memory_total_bytes"),
                              "total {{name}}")])),
        ]),
        (8, [
            (12, p.timeseries(
                "GPU temperature", f"Core temperature per card; dashed: "
                f"{LIMITS.gpu_temperature_celsius:g} °C, where throttling starts to matter.",
                "celsius", [p.prometheus(q.gpu_named("nvidia_smi_temperature_gpu"),
                                         "{{name}}")],
                thresholds=p.below_is_good(LIMITS.gpu_temperature_celsius))),
            (12, p.timeseries(
                "GPU power", "Power draw and the enforced power limit, per card.", "watt",
                [p.prometheus(q.gpu_named("nvidia_smi_power_draw_watts"), "draw {{name}}"),
                 p.prometheus(q.gpu_named("nvidia_smi_enforced_power_limit_watts"),
                              "limit {{name}}")])),
        ]),
        (8, [
            (12, p.timeseries(
                "Ollama container memory", "Working set of the Ollama container and its "
                "memory limit (OLLAMA_MEMORY_LIMIT). Dashed: the alert point for the default "
                f"{LIMITS.ollama_memory_limit_bytes / 1024**3:g} GiB limit.", "bytes",
                [p.prometheus(q.ollama_working_set(), "working set {{name}}"),
                 p.prometheus(q.ollama_memory_limit(), "limit {{name}}")],
                thresholds=p.below_is_good(
                    LIMITS.ollama_memory_limit_bytes * LIMITS.ollama_memory_ratio))),
            (12, p.timeseries(
                "Models volume disk", f"Used share of the filesystem holding "
                f"{SELECTORS.docker_data_root} (the ollama-models volume); dashed: "
                f"{LIMITS.models_disk_ratio:.0%}.", "percentunit",
                [p.prometheus(q.models_filesystem_used_ratio(), "{{mountpoint}}")],
                thresholds=p.below_is_good(LIMITS.models_disk_ratio), max_value=1)),
        ]),
        (8, [
            (6, p.timeseries(
                "Host CPU", "Share of the host's CPU time not idle, all cores.",
                "percentunit", [p.prometheus(q.node_cpu_used(W), "{{instance}}")],
                max_value=1)),
            (6, p.timeseries(
                "Host memory", f"Share of the host's memory not available "
                f"(1 - MemAvailable/MemTotal); dashed: {LIMITS.node_memory_ratio:.0%}.",
                "percentunit", [p.prometheus(q.node_memory_used_ratio(), "{{instance}}")],
                thresholds=p.below_is_good(LIMITS.node_memory_ratio), max_value=1)),
            (6, p.timeseries(
                "Container CPU", "CPU cores used by each container of the stack (cAdvisor).",
                "short", [p.prometheus(q.container_cpu(W), "{{name}}")])),
            (6, p.timeseries(
                "Container memory", "Working set of each container of the stack (cAdvisor).",
                "bytes", [p.prometheus(q.container_memory(), "{{name}}")])),
        ]),
    ]
    return p.dashboard(
        DASHBOARD_UIDS.gpu_host, "LLM GPU and host",
        "The GPU (nvidia_gpu_exporter), the Ollama container (cAdvisor) and the host "
        "(node exporter): utilisation, memory, temperature, power, disk.",
        rows,
    )


DASHBOARDS = {
    "llm-overview.json": overview,
    "llm-users-cost.json": users_and_cost,
    "llm-gpu-host.json": gpu_and_host,
}
