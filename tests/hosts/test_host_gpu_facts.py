"""What the host suite reads about GPUs, on recorded output (samples/): no GPU, Docker or host.

Whether a host has a GPU and a working driver is the nvidia role's decision, made here by the
role's own plugin on the role's own probes (nvidia_role.py); that plugin is tested on recorded
`lspci` and `nvidia-smi` output in tests/playbooks/test_gpu_facts.py. What is the host suite's
alone is Ollama's log, tested below.
"""

from __future__ import annotations

from pathlib import Path

from tests.hosts.nvidia_role import LSPCI, NVIDIA_SMI
from tests.hosts.ollama_log import parse_inference_compute, parse_logfmt, reports_no_gpu

SAMPLES = Path(__file__).parent / "samples"


def sample(name: str) -> str:
    return (SAMPLES / name).read_text()


# --- the role's probes ----------------------------------------------------------------------------


def test_the_host_suite_runs_the_roles_probes_with_the_roles_defaults() -> None:
    assert LSPCI == "lspci -mm -nn"
    # The plugin reads the columns in this order: index, name, driver, memory, uuid.
    assert NVIDIA_SMI == (
        "nvidia-smi --query-gpu=index,name,driver_version,memory.total,uuid "
        "--format=csv,noheader,nounits"
    )


# --- Ollama's log ---------------------------------------------------------------------------------


def test_legacy_log_gpu_line() -> None:
    (device,) = parse_inference_compute(sample("ollama-legacy-gpu.log"))

    assert device.is_gpu
    assert device.library == "cuda"
    assert device.name == "NVIDIA GeForce RTX 3060"
    assert device.id.startswith("GPU-")
    assert device.total == "11.8 GiB"
    assert device.fields["compute"] == "8.6"


def test_legacy_log_cpu_fallback() -> None:
    log = sample("ollama-legacy-cpu.log")
    (device,) = parse_inference_compute(log)

    assert not device.is_gpu
    assert (device.id, device.library, device.name) == ("0", "cpu", "")
    assert reports_no_gpu(log)


def test_current_log_gpu_line_under_journald_prefixes() -> None:
    (device,) = parse_inference_compute(sample("ollama-current-gpu.journal"))

    assert device.is_gpu
    # Upper case since v0.12.4; the human name moved from `name` (now CUDA0) to `description`.
    assert device.library == "CUDA"
    assert device.name == "NVIDIA GeForce RTX 3060 Ti"
    assert device.fields["name"] == "CUDA0"
    assert device.fields["pci_id"] == "0000:01:00.0"
    assert device.fields["filter_id"] == ""
    assert device.total == "8.0 GiB"


def test_current_log_cpu_fallback() -> None:
    log = sample("ollama-current-cpu.log")
    (device,) = parse_inference_compute(log)

    assert not device.is_gpu
    assert (device.id, device.library) == ("cpu", "cpu")
    # v0.12.4+ no longer logs "no compatible GPUs"; the cpu line is the only sign.
    assert not reports_no_gpu(log)


def test_a_gpu_the_driver_cannot_serve_shows_as_cpu() -> None:
    devices = parse_inference_compute(sample("ollama-current-driver-too-old.log"))

    assert [device.is_gpu for device in devices] == [False]


def test_several_gpus_give_one_device_each() -> None:
    line = (
        'time=… level=INFO source=types.go:42 msg="inference compute" id=GPU-{n} filter_id="" '
        'library=CUDA compute=8.6 name=CUDA{n} description="NVIDIA A10G" total="22.0 GiB"\n'
    )
    devices = parse_inference_compute(line.format(n=0) + line.format(n=1))

    assert [device.id for device in devices] == ["GPU-0", "GPU-1"]
    assert all(device.is_gpu for device in devices)


def test_a_log_without_discovery_lines_has_no_devices() -> None:
    # What the CI simulator prints: it serves Ollama's API but has no discovery step.
    assert parse_inference_compute("INFO:     Ollama simulator 0.33.0 listening on ...\n") == []


def test_logfmt_keeps_quoted_values_and_skips_quoted_keys() -> None:
    fields = parse_logfmt('msg="entering low vram mode" "total vram"="8.0 GiB" threshold="20 GiB"')

    assert fields == {"msg": "entering low vram mode", "threshold": "20 GiB"}


def test_logfmt_unescapes_quotes_inside_values() -> None:
    assert parse_logfmt(r'name="GPU \"A\"" x=1') == {"name": 'GPU "A"', "x": "1"}
