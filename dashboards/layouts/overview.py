"""LLM overview: traffic, errors, latency, time to first token and speed against the targets."""

from __future__ import annotations

from dashboards import panels as p
from dashboards import queries as q
from dashboards.config import BUDGETS, DASHBOARD_UIDS, SELECTORS, TARGETS
from dashboards.panels import Json
from dashboards.queries import DASHBOARD_WINDOW as W
from dashboards.queries import MODEL_VARIABLE as M

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
            (8, p.timeseries(
                "Requests by model", "Requests per second through the proxy, by model "
                "(`unknown`: a model Ollama does not have; `none`: no model, e.g. /models).",
                "reqps", [p.prometheus(q.request_rate(W, ("model",), M), "{{model}}")])),
            (8, p.timeseries(
                "Requests by status", "Requests per second by HTTP status: 401/403 "
                "authentication, 422 invalid input, 429 limits, 5xx failures.",
                "reqps", [p.prometheus(q.request_rate(W, ("status",), M), "{{status}}")])),
            (8, p.timeseries(
                "Requests by API", "Requests per second by the dialect they were made in: "
                "`llm` (the proxy's own API, the web page), `openai` (/v1), `ollama` (/ollama).",
                "reqps", [p.prometheus(q.request_rate(W, ("api",), M), "{{api}}")])),
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
                "Engines in rotation", "1 while an engine (an upstream of the proxy) is "
                "healthy and not ejected; 0 while it fails its probes or cools down after "
                "failures in a row.",
                "short", [p.prometheus(q.upstream_healthy(), "{{upstream}}")], max_value=1)),
            (8, p.timeseries(
                "Generations by engine", "Generations sent to each engine per second (a retry "
                "counts on the engine it went to), and those running now.",
                "reqps", [p.prometheus(q.upstream_rate("requests", W), "{{upstream}}"),
                          p.prometheus(q.upstream_in_flight(), "{{upstream}} in flight")])),
            (8, p.timeseries(
                "Engine failures and ejections", "Failures that count against an engine's "
                "health (refused, reset, 5xx, timeouts; not unknown models), and ejections "
                "out of rotation, per second.",
                "short", [p.prometheus(q.upstream_rate("failures", W), "{{upstream}} failures"),
                          p.prometheus(q.upstream_rate("ejections", W),
                                       "{{upstream}} ejections")])),
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
        (8, [
            (12, p.timeseries(
                "Team spend vs budget", f"What each team has spent of its budget in the "
                f"current period (day, week or month; the cost model's currency); dashed: "
                f"{BUDGETS.team_budget_ratio:.0%}, where TeamBudgetNearlySpent fires. At 100% "
                f"its members' requests are refused until the period resets.",
                "percentunit", [p.prometheus(q.team_budget_ratio(), "{{team}} ({{period}})")],
                thresholds=p.below_is_good(BUDGETS.team_budget_ratio))),
            (12, p.timeseries(
                "API keys near their limit", "API keys at 90% or more of a limit of their own: "
                "tokens per minute, tokens per day, or their budget.",
                "short", [p.prometheus(q.keys_near_limit(), "{{limit}}")])),
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
