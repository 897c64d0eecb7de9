"""Prometheus recording and alert rules, built from `config.py` and `queries.py`.

Recording rules hold the expressions that alerts and dashboards share (quantiles, ratios);
alerts compare them with the thresholds of config.py. Severity is `page` (users are failing now:
someone must act) or `ticket` (degraded or heading for trouble: act within working hours). Every
alert has a summary, a description with the value that tripped it, and a runbook link to
docs/runbooks.md#<alertname in lower case>.

Alertmanager (alertmanager/alertmanager.yml) routes by those severities and by two things decided
here: `Watchdog`, which always fires (the dead man's switch: its notifications stopping means the
path Prometheus -> Alertmanager -> receiver is broken), and the `depends_on: proxy` label, which
every alert computed from the proxy's own metrics carries, so that while `LlmProxyDown` fires
they are inhibited rather than reported as a second, third... outage. The label is derived from
the expression (recording rules expanded), so an alert added later gets it without anyone
remembering to.

`promtool test rules` cases for every alert are in prometheus/tests/ (written by hand: they
prove the generated rules, so they must not be generated from the same source).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from dashboards import queries as q
from dashboards.config import (
    ABUSE,
    BUDGETS,
    LIMITS,
    RUNBOOK_BASE,
    SELECTORS,
    TARGETS,
    WINDOWS,
)

S = SELECTORS

# --- recording rules: `level:metric:operations` --------------------------------------------

GENERATION_P95 = f"llm_proxy:generation_duration_seconds:p95_{WINDOWS.short}"
TTFT_P95 = f"llm_proxy:time_to_first_token_seconds:p95_{WINDOWS.short}"
TOKENS_PER_SECOND_P50 = f"model:llm_proxy_generation_tokens_per_second:p50_{WINDOWS.long}"
GENERATIONS = f"model:llm_proxy_generations:increase{WINDOWS.long}"
ERROR_RATIO = f"llm_proxy:error_ratio:rate{WINDOWS.short}"
RATE_LIMITED_RATIO = f"llm_proxy:rate_limited_ratio:rate{WINDOWS.long}"
GPU_MEMORY_RATIO = "llm_stack:gpu_memory_used:ratio"
OLLAMA_MEMORY_RATIO = "llm_stack:ollama_memory_working_set:ratio"
MODELS_DISK_RATIO = "llm_stack:models_filesystem_used:ratio"
TEAM_BUDGET_RATIO = "team:llm_proxy_team_budget_spend:ratio"

RECORDING_RULES: list[tuple[str, str]] = [
    (GENERATION_P95, q.latency_quantile(0.95, WINDOWS.short)),
    (TTFT_P95, q.ttft_quantile(0.95, WINDOWS.short)),
    (TOKENS_PER_SECOND_P50, q.tokens_per_second_quantile(0.5, WINDOWS.long)),
    (GENERATIONS, q.generations(WINDOWS.long)),
    (ERROR_RATIO, q.error_ratio(WINDOWS.short)),
    (RATE_LIMITED_RATIO, q.rate_limited_ratio(WINDOWS.long)),
    (GPU_MEMORY_RATIO, q.gpu_memory_ratio()),
    (OLLAMA_MEMORY_RATIO, q.ollama_memory_ratio()),
    (MODELS_DISK_RATIO, q.models_filesystem_used_ratio()),
    (TEAM_BUDGET_RATIO, q.team_budget_ratio()),
]


# --- alerts ---------------------------------------------------------------------------------

PAGE = "page"
TICKET = "ticket"
# Watchdog's: it is no problem at all, and routed by its name alone.
NO_SEVERITY = "none"
WATCHDOG = "Watchdog"
PROXY_DOWN = "LlmProxyDown"
# The label Alertmanager's inhibition selects: set on the alerts that read the proxy's metrics.
DEPENDS_ON = "depends_on"
PROXY = "proxy"


def expanded(expr: str) -> str:
    """`expr` with every recording rule it names replaced by that rule's own expression."""
    for name, recorded in RECORDING_RULES:
        # Split rather than re.sub, whose replacement would read backslashes in PromQL as escapes.
        parts = re.split(rf"(?<![\w:]){re.escape(name)}(?![\w:])", expr)
        expr = f"({recorded})".join(parts)
    return expr


def reads_proxy_metrics(expr: str) -> bool:
    """Whether `expr` selects series of the proxy's scrape job, directly or through a recording
    rule."""
    return S.proxy in expanded(expr)


@dataclass(frozen=True)
class Alert:
    name: str
    expr: str
    # "" fires at the first evaluation that finds the condition true.
    for_: str
    severity: str  # PAGE or TICKET (NO_SEVERITY for the Watchdog only)
    summary: str
    description: str

    @property
    def depends_on_proxy(self) -> bool:
        """Computed from the proxy's metrics, which go stale or missing when the proxy is down;
        LlmProxyDown itself reads Prometheus's `up`, not the proxy."""
        return self.name != PROXY_DOWN and reads_proxy_metrics(self.expr)

    def labels(self) -> dict[str, str]:
        labels = {"severity": self.severity}
        if self.depends_on_proxy:
            labels[DEPENDS_ON] = PROXY
        return labels

    def rule(self) -> dict[str, Any]:
        return {
            "alert": self.name,
            "expr": self.expr,
            **({"for": self.for_} if self.for_ else {}),
            "labels": self.labels(),
            "annotations": {
                "summary": self.summary,
                "description": self.description,
                "runbook_url": runbook_url(self.name),
            },
        }


def runbook_url(alert: str) -> str:
    return f"{RUNBOOK_BASE}#{alert.lower()}"


def pct(ratio: float) -> str:
    return f"{ratio * 100:g}%"


ALERTS: list[Alert] = [
    Alert(
        WATCHDOG,
        "vector(1)",
        "", NO_SEVERITY,
        "Always firing: the alerting pipeline works",
        "This alert fires all the time on purpose. Alertmanager sends it to the `watchdog` "
        "receiver, a dead man's switch outside this host that raises the alarm when the "
        "notifications stop: then Prometheus, Alertmanager or the path to the receivers is "
        "down, and no other alert would reach anyone either.",
    ),
    Alert(
        PROXY_DOWN,
        f"{q.proxy_up()} == 0\nor\n{q.proxy_absent()}",
        "2m", PAGE,
        "The LLM proxy is not answering Prometheus",
        "Prometheus cannot scrape the proxy{{ with $labels.instance }} at {{ . }}{{ end }}, or "
        "has no proxy target at all: users cannot reach any model.",
    ),
    Alert(
        "OllamaDown",
        f"{q.upstream_up()} == 0",
        "2m", PAGE,
        "The proxy cannot reach Ollama",
        "The proxy's last contact with Ollama failed ({{ $labels.instance }}): every generation "
        "answers 503 until Ollama is back.",
    ),
    Alert(
        "LlmProxyHighErrorRatio",
        f"{ERROR_RATIO} > {TARGETS.error_ratio:g}",
        "10m", PAGE,
        f"More than {pct(TARGETS.error_ratio)} of LLM requests fail",
        "{{ $value | humanizePercentage }} of the requests the proxy served in the last "
        f"{WINDOWS.short} ended in a 5xx (target below {pct(TARGETS.error_ratio)}; 4xx, "
        "including 429 from the limits, are not counted).",
    ),
    Alert(
        "LlmProxyHighLatency",
        f"{GENERATION_P95} > {TARGETS.latency_p95_seconds:g}",
        "15m", TICKET,
        f"P95 generation latency above {TARGETS.latency_p95_seconds:g} s",
        "95% of generate/chat requests finish within {{ $value | humanizeDuration }} "
        f"(target {TARGETS.latency_p95_seconds:g} s), measured end to end over "
        f"{WINDOWS.short}.",
    ),
    Alert(
        "LlmProxySlowFirstToken",
        f"{TTFT_P95} > {TARGETS.ttft_p95_seconds:g}",
        "15m", TICKET,
        f"P95 time to first token above {TARGETS.ttft_p95_seconds:g} s",
        "95% of generations start streaming within {{ $value | humanizeDuration }} "
        f"(target {TARGETS.ttft_p95_seconds:g} s) over {WINDOWS.short}.",
    ),
    Alert(
        "LlmSlowGeneration",
        f"{TOKENS_PER_SECOND_P50} < {TARGETS.tokens_per_second_p50_min:g}\n"
        f"and on (model)\n{GENERATIONS} >= {WINDOWS.min_generations}",
        "15m", TICKET,
        "{{ $labels.model }} generates fewer than "
        f"{TARGETS.tokens_per_second_p50_min:g} tokens/s",
        "The median generation speed of {{ $labels.model }} is {{ $value | printf \"%.1f\" }} "
        f"tokens/s over {WINDOWS.long} (target {TARGETS.tokens_per_second_p50_min:g}–"
        f"{TARGETS.tokens_per_second_p50_good:g}); counted only with at least "
        f"{WINDOWS.min_generations} generations in that window.",
    ),
    Alert(
        "GpuNotDetected",
        f"{q.gpu_expected()} == 1\nunless on ()\ncount({q.gpu_info()}) > 0",
        "5m", PAGE,
        "This host should have a GPU, and none is reported",
        "The deployment asked for a GPU (docker-compose.gpu.yml or Pulumi gpu: true), but the "
        "GPU exporter reports no card: Ollama is running on the CPU, or not at all.",
    ),
    Alert(
        "GpuMemoryNearlyFull",
        f"{GPU_MEMORY_RATIO} > {LIMITS.gpu_memory_ratio:g}",
        "15m", TICKET,
        f"GPU memory above {pct(LIMITS.gpu_memory_ratio)}",
        "GPU {{ $labels.uuid }} has {{ $value | humanizePercentage }} of its memory in use: "
        "another model or a longer context will not fit and Ollama will offload layers to the "
        "CPU.",
    ),
    Alert(
        "GpuTemperatureHigh",
        f"{q.gpu_metric('nvidia_smi_temperature_gpu')} > {LIMITS.gpu_temperature_celsius:g}",
        "10m", TICKET,
        f"GPU hotter than {LIMITS.gpu_temperature_celsius:g} °C",
        "GPU {{ $labels.uuid }} is at {{ $value }} °C: it will throttle its clocks and "
        "generation slows down.",
    ),
    Alert(
        "OllamaMemoryNearLimit",
        f"{OLLAMA_MEMORY_RATIO} > {LIMITS.ollama_memory_ratio:g}",
        "10m", TICKET,
        f"Ollama uses more than {pct(LIMITS.ollama_memory_ratio)} of its memory limit",
        "Container {{ $labels.name }} uses {{ $value | humanizePercentage }} of its memory "
        "limit (OLLAMA_MEMORY_LIMIT, 12g by default): the next model load may be OOM-killed.",
    ),
    Alert(
        "ModelsDiskAlmostFull",
        f"{MODELS_DISK_RATIO} > {LIMITS.models_disk_ratio:g}",
        "15m", TICKET,
        f"The disk holding the models volume is over {pct(LIMITS.models_disk_ratio)} full",
        "{{ $labels.mountpoint }} (the filesystem under " + S.docker_data_root + ") is "
        "{{ $value | humanizePercentage }} full: the next `ollama pull` may fail halfway.",
    ),
    Alert(
        "LlmProxyAuthFailureSpike",
        f"{q.auth_failure_rate(WINDOWS.short)} > {ABUSE.auth_failures_per_second:g}",
        "10m", TICKET,
        "Many failed authentications at the proxy",
        "{{ $value | printf \"%.2f\" }} failed authentications per second over "
        f"{WINDOWS.short} (threshold {ABUSE.auth_failures_per_second:g}/s): expired tokens "
        "after a key rotation, a misconfigured client, or someone guessing.",
    ),
    Alert(
        "LlmProxyRateLimitSpike",
        f"{RATE_LIMITED_RATIO} > {ABUSE.rate_limited_ratio:g}\n"
        f"and on ()\n{q.rate_limited_rate(WINDOWS.long)} > {ABUSE.rate_limited_per_second:g}",
        "15m", TICKET,
        f"More than {pct(ABUSE.rate_limited_ratio)} of requests are refused by the limits",
        "{{ $value | humanizePercentage }} of requests over "
        f"{WINDOWS.long} got 429: a client is looping, or the limits are too tight for real "
        "use.",
    ),
    Alert(
        "AuditSpoolNotDraining",
        f"{q.audit_spooled_rows()} > 0\n"
        f"and\ndelta({q.audit_spooled_rows()}[{WINDOWS.long}]) >= 0",
        "10m", TICKET,
        "Audit rows are piling up in the proxy's local spool",
        "{{ $value }} audit rows wait in the spool file of {{ $labels.instance }} and the "
        "number is not going down: the proxy cannot write to Postgres.",
    ),
    Alert(
        "LlmProxyLimiterBackendErrors",
        f"{q.limiter_error_rate(WINDOWS.short, ('mode',))} > 0",
        "5m", TICKET,
        "The proxy cannot reach Redis for its limits",
        "Limit checks fail against Redis in mode {{ $labels.mode }}: 'closed' refuses "
        "generations with 503, 'open' admits them without limits.",
    ),
    Alert(
        "TeamBudgetNearlySpent",
        f"{TEAM_BUDGET_RATIO} >= {BUDGETS.team_budget_ratio:g}",
        "5m", "ticket",
        "Team {{ $labels.team }} has spent "
        f"{pct(BUDGETS.team_budget_ratio)} of its {{{{ $labels.period }}}}ly budget",
        "Team {{ $labels.team }} has spent {{ $value | humanizePercentage }} of its budget for "
        "this {{ $labels.period }}: at 100% its members' requests are refused (429 "
        "budget_exceeded) until the period resets.",
    ),
    Alert(
        "ExporterDown",
        f"{q.exporter_up()} == 0",
        "10m", TICKET,
        "Exporter {{ $labels.job }} is down",
        "Prometheus cannot scrape {{ $labels.instance }} (job {{ $labels.job }}): the host, "
        "container and GPU-expectation alerts that rely on it are blind.",
    ),
]


def rule_groups() -> dict[str, Any]:
    return {
        "groups": [
            {
                "name": "llm-stack.recording",
                "rules": [{"record": name, "expr": expr} for name, expr in RECORDING_RULES],
            },
            {"name": "llm-stack.alerts", "rules": [alert.rule() for alert in ALERTS]},
        ]
    }
