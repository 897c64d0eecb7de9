"""LLM users and cost: per-user usage and cost from the audit log, limits and auth failures."""

from __future__ import annotations

from dashboards import audit_queries as sql
from dashboards import panels as p
from dashboards import queries as q
from dashboards.config import ABUSE, DASHBOARD_UIDS
from dashboards.panels import Json
from dashboards.queries import DASHBOARD_WINDOW as W

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
