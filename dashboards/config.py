"""The one place for what the stack's monitoring watches and where it draws the line.

Everything else is derived from this module: `queries.py` turns the selectors into PromQL and
SQL, `rules.py` the thresholds into alert and recording rules, `layouts/` the targets into
dashboard thresholds. Change a value here, run `.venv/bin/python dashboards/build.py`, commit
the result (`tests/dashboards/` fails while the committed files differ from what the build
produces).

Selectors are label-matcher strings without braces, in the kubernetes-mixin way, so that a
query is written once and every job name lives here.
"""

from __future__ import annotations

from dataclasses import dataclass

GIB = 1024**3


@dataclass(frozen=True)
class Selectors:
    # Scrape jobs of prometheus/prometheus.yml (tests hold that file to these names).
    proxy: str = 'job="proxy"'
    gpu: str = 'job="gpu"'
    node: str = 'job="node"'
    cadvisor: str = 'job="cadvisor"'
    prometheus: str = 'job="prometheus"'
    # Jobs whose absence hides a whole class of alerts (host, container and GPU ones).
    exporter_jobs: str = "node|cadvisor"
    # Requests that generate text, in every dialect: the proxy's own generate/chat and each
    # WebSocket request frame, OpenAI's (chat) completions, Ollama's generate/chat.
    generation_endpoints: str = ("/api/llm/(generate|chat|ws)|/v1/(chat/)?completions"
                                 "|/ollama/api/(generate|chat)")
    # The Ollama container as cAdvisor names it: compose calls it `llm-stack-ollama-1`, the
    # Pulumi program `llm-stack-ollama`.
    ollama_container: str = "llm-stack-ollama(-[0-9]+)?"
    # Every container of the stack (compose project and Pulumi name prefix `llm-stack`).
    stack_containers: str = "llm-stack-.+"
    # Docker's data root: the models volume is `<root>/volumes/llm-stack_ollama-models`. The
    # alert watches the deepest mount point on the path to it (see queries.models_filesystem).
    docker_data_root: str = "/var/lib/docker"
    # Pseudo and in-memory filesystems never hold a Docker volume.
    ignored_fstypes: str = "tmpfs|ramfs|overlay|squashfs|nsfs|autofs"


@dataclass(frozen=True)
class Targets:
    """Service-level targets: alerts fire past them, dashboards draw them as threshold lines."""

    latency_p95_seconds: float = 5.0
    ttft_p95_seconds: float = 1.0
    tokens_per_second_p50_min: float = 30.0
    tokens_per_second_p50_good: float = 50.0
    concurrent_requests: int = 50
    error_ratio: float = 0.01


@dataclass(frozen=True)
class Limits:
    """Resource thresholds."""

    gpu_memory_ratio: float = 0.95
    # Of the Ollama container's own memory limit (OLLAMA_MEMORY_LIMIT, 12g by default); the rule
    # reads the live limit from cAdvisor, so changing the limit needs no change here.
    ollama_memory_ratio: float = 0.90
    ollama_memory_limit_bytes: int = 12 * GIB  # drawn on the dashboard as the expected limit
    models_disk_ratio: float = 0.85
    node_memory_ratio: float = 0.90
    gpu_temperature_celsius: float = 85.0


@dataclass(frozen=True)
class Abuse:
    """When refusals stop being background noise."""

    auth_failures_per_second: float = 0.2  # 12 a minute, sustained
    rate_limited_ratio: float = 0.10  # of all requests
    rate_limited_per_second: float = 0.05  # and at least 3 a minute, so one user's burst is quiet


@dataclass(frozen=True)
class Budgets:
    """When spend is worth someone's attention before the hard limit refuses requests."""

    team_budget_ratio: float = 0.90  # of a team's budget for its period


BUDGETS = Budgets()


@dataclass(frozen=True)
class Windows:
    """Rate windows of the recording rules, and how long a condition must hold to alert."""

    short: str = "5m"
    long: str = "10m"
    # A tokens/s verdict needs a few generations in `long`, not one slow request.
    min_generations: int = 5


@dataclass(frozen=True)
class Datasources:
    # Fixed uids of grafana/provisioning/datasources/*.yml; every panel refers to them.
    prometheus: str = "prometheus"
    audit: str = "audit-postgres"


@dataclass(frozen=True)
class DashboardUids:
    overview: str = "llm-overview"
    users: str = "llm-users-cost"
    gpu_host: str = "llm-gpu-host"


# runbook_url of every alert: this file plus `#<alertname in lower case>`. Repository-relative
# so it stays right in any clone or fork; set it to the published address of docs/runbooks.md
# (e.g. https://git.example.org/ops/llm-stack/blob/main/docs/runbooks.md) to get links that a
# browser can open from the alert, then rebuild.
RUNBOOK_BASE = "docs/runbooks.md"

# The metric a node-exporter textfile (node-exporter/textfile-{cpu,gpu}/) sets: 1 where the
# deployment asked for a GPU (docker-compose.gpu.yml, Pulumi `gpu: true`), else 0.
GPU_EXPECTED_METRIC = "llm_stack_gpu_expected"

SELECTORS = Selectors()
TARGETS = Targets()
LIMITS = Limits()
ABUSE = Abuse()
WINDOWS = Windows()
DATASOURCES = Datasources()
DASHBOARD_UIDS = DashboardUids()
