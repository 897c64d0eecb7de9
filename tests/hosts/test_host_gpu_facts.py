"""The GPU-fact parsers on recorded output (samples/): no GPU, no Docker, no host needed."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.hosts.gpu_facts import (
    NVIDIA_SMI_QUERY,
    count_nvidia_pci_gpus,
    nvidia_smi_failure,
    parse_inference_compute,
    parse_logfmt,
    parse_nvidia_smi_list,
    parse_nvidia_smi_query,
    reports_no_gpu,
)

SAMPLES = Path(__file__).parent / "samples"


def sample(name: str) -> str:
    return (SAMPLES / name).read_text()


# --- PCI ------------------------------------------------------------------------------------------


def test_an_nvidia_display_controller_counts_and_its_audio_function_does_not() -> None:
    assert count_nvidia_pci_gpus(sample("pci-gpu.txt")) == 1


def test_a_host_without_nvidia_hardware_has_no_gpu_even_with_another_display_controller() -> None:
    assert count_nvidia_pci_gpus(sample("pci-no-gpu.txt")) == 0


def test_a_3d_controller_counts_like_a_vga_one() -> None:
    # Datacenter GPUs (A100, H100) present themselves as 3D controllers, class 0x0302.
    assert count_nvidia_pci_gpus("0x10de 0x030200\n0x10de 0x030200\n") == 2


def test_unreadable_pci_lines_are_ignored() -> None:
    assert count_nvidia_pci_gpus("cat: /sys/bus/pci/devices/x/vendor: No such file\n\n") == 0


# --- nvidia-smi -----------------------------------------------------------------------------------


def test_query_output_gives_each_gpu_with_its_memory_and_driver() -> None:
    gpus = parse_nvidia_smi_query(sample("nvidia-smi-query-2gpu.csv"))

    assert [gpu.index for gpu in gpus] == [0, 1]
    assert gpus[0].name == "NVIDIA GeForce RTX 3060"
    assert gpus[0].memory_total_mib == 12288
    assert gpus[0].driver_version == "550.54.14"
    assert gpus[1].uuid.startswith("GPU-")


def test_query_output_of_another_shape_is_an_error_not_a_guess() -> None:
    with pytest.raises(ValueError, match="unexpected nvidia-smi line"):
        parse_nvidia_smi_query("NVIDIA GeForce RTX 3060, 12288 MiB\n")


def test_the_query_asks_for_the_fields_the_parser_reads() -> None:
    assert "--query-gpu=index,name,uuid,driver_version,memory.total" in NVIDIA_SMI_QUERY
    assert "noheader,nounits" in NVIDIA_SMI_QUERY


def test_list_output_names_whole_gpus_not_their_mig_slices() -> None:
    assert parse_nvidia_smi_list(sample("nvidia-smi-L.txt")) == [
        "NVIDIA GeForce RTX 3060",
        "NVIDIA A100-SXM4-40GB",
    ]


@pytest.mark.parametrize(
    ("status", "output", "failure"),
    [
        (0, "GPU 0: NVIDIA GeForce RTX 3060 (UUID: GPU-1)\n", None),
        (9, sample("nvidia-smi-driver-missing.txt"), "driver-unreachable"),
        (6, sample("nvidia-smi-no-devices.txt"), "no-devices"),
        (127, "sh: 1: nvidia-smi: not found\n", "not-installed"),
        (1, "Unable to determine the device handle for GPU0000:01:00.0: Unknown Error\n", "failed"),
    ],
)
def test_each_way_nvidia_smi_fails_is_named(status: int, output: str, failure: str | None) -> None:
    assert nvidia_smi_failure(status, output) == failure


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
