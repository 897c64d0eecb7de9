"""LLM GPU and host: the GPUs, the Ollama container and the host's CPU, memory and disk."""

from __future__ import annotations

from dashboards import panels as p
from dashboards import queries as q
from dashboards.config import DASHBOARD_UIDS, LIMITS, SELECTORS
from dashboards.panels import Json
from dashboards.queries import DASHBOARD_WINDOW as W


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
