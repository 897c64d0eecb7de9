"""SQL over the proxy's `audit_log` table, for the per-user panels of the users dashboard.

The proxy's metrics carry no user label on purpose (one series per user would grow without
bound), so per-user numbers come from the audit log in Postgres, read by Grafana through the
`audit-postgres` datasource as the read-only role of grafana/audit-reader.sql.

The definitions are those of the admin API (proxy/services/usage.py), so a row here equals what
`GET /api/admin/usage?group_by=user` reports for the same range (a test holds them together):
- errors: status >= 400 except 429 (rate-limited requests are counted apart);
- p95 latency: nearest rank over the requests that succeeded (status < 400);
- cost: the `gpu_time` cost model, upstream seconds of uncached requests priced at
  `$cost_gpu_hour` per hour plus `$cost_hardware_month` spread over a 30-day month (the
  dashboard's variables; set them to PROXY_COST_GPU_HOUR and PROXY_COST_HARDWARE_MONTH). For the
  `tokens` cost model use the admin API's /api/admin/costs.

Grafana expands `$__timeFilter`, `$__timeGroupAlias` and the `${var:sqlstring}` variables
(quoted and escaped, then cast, so a variable's value can never become SQL). Only the columns
granted to the reader are named: never `prompt_text`, `prompt_sha256` or `client`.
"""

from __future__ import annotations

SECONDS_PER_MONTH = 30 * 24 * 3600  # proxy/services/usage.py's SECONDS_PER_MONTH
TOP_N = "${top_n:sqlstring}::int"
PRICE_PER_SECOND = (
    "(${cost_gpu_hour:sqlstring}::float8 / 3600"
    f" + ${{cost_hardware_month:sqlstring}}::float8 / {SECONDS_PER_MONTH})"
)
USER = "coalesce(\"user\", '-')"  # the admin API's name for requests without a user
GPU_SECONDS = "coalesce(sum(upstream_ms) FILTER (WHERE NOT cached), 0) / 1000.0"

# The columns audit-reader.sql grants; tests hold the queries and the grant to this list.
READABLE_COLUMNS = (
    "id", "at", "user", "role", "endpoint", "model", "prompt_tokens", "completion_tokens",
    "ttft_ms", "duration_ms", "upstream_ms", "status", "cached",
)

USERS_TABLE = f"""\
SELECT
  {USER} AS "user",
  count(*) AS requests,
  count(*) FILTER (WHERE status >= 400 AND status <> 429) AS errors,
  count(*) FILTER (WHERE status = 429) AS rate_limited,
  count(*) FILTER (WHERE cached) AS cached,
  sum(prompt_tokens) AS prompt_tokens,
  sum(completion_tokens) AS completion_tokens,
  percentile_disc(0.95) WITHIN GROUP (ORDER BY duration_ms)
    FILTER (WHERE status < 400) / 1000.0 AS p95_latency_s,
  {GPU_SECONDS} AS gpu_seconds,
  {GPU_SECONDS} * {PRICE_PER_SECOND} AS cost
FROM audit_log
WHERE $__timeFilter(at)
GROUP BY 1
ORDER BY requests DESC, 1
LIMIT {TOP_N}"""

TOP_USERS_BY_TOKENS = f"""\
SELECT
  {USER} AS "user",
  sum(prompt_tokens + completion_tokens) AS tokens
FROM audit_log
WHERE $__timeFilter(at)
GROUP BY 1
ORDER BY tokens DESC, 1
LIMIT {TOP_N}"""

TOP_USERS_BY_COST = f"""\
SELECT
  {USER} AS "user",
  {GPU_SECONDS} * {PRICE_PER_SECOND} AS cost
FROM audit_log
WHERE $__timeFilter(at)
GROUP BY 1
ORDER BY cost DESC, 1
LIMIT {TOP_N}"""

ACTIVE_USERS = """\
SELECT
  $__timeGroupAlias(at, $__interval),
  count(DISTINCT "user") AS "active users"
FROM audit_log
WHERE $__timeFilter(at) AND "user" IS NOT NULL
GROUP BY 1
ORDER BY 1"""

REQUESTS_PER_USER = f"""\
WITH top AS (
  SELECT "user" FROM audit_log
  WHERE $__timeFilter(at) AND "user" IS NOT NULL
  GROUP BY 1 ORDER BY count(*) DESC, 1 LIMIT {TOP_N}
)
SELECT
  $__timeGroupAlias(at, $__interval),
  "user" AS metric,
  count(*) AS requests
FROM audit_log
WHERE $__timeFilter(at) AND "user" IN (SELECT "user" FROM top)
GROUP BY 1, 2
ORDER BY 1, 2"""

TOKENS_BY_USER_AND_MODEL = f"""\
SELECT
  {USER} AS "user",
  coalesce(model, '-') AS model,
  count(*) AS requests,
  sum(prompt_tokens) AS prompt_tokens,
  sum(completion_tokens) AS completion_tokens,
  {GPU_SECONDS} AS gpu_seconds
FROM audit_log
WHERE $__timeFilter(at) AND model IS NOT NULL
GROUP BY 1, 2
ORDER BY completion_tokens DESC, 1, 2
LIMIT {TOP_N} * 5"""
