"""GPU: a host with an NVIDIA GPU serves from it; a host without one runs the CPU fallback.

Whether the host has a GPU is read from the PCI bus (or set with --stack-expect-gpu), never from
the driver: a GPU host whose driver, Container Toolkit or Ollama discovery broke must fail here,
not pass as a CPU host. On a CPU host (CI included) the checks assert the documented fallback:
no GPU is visible, the Ollama container requests none, and models load into system memory.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.hosts import probes
from tests.hosts.gpu_facts import (
    NVIDIA_SMI_QUERY,
    count_nvidia_pci_gpus,
    nvidia_smi_failure,
    parse_inference_compute,
    parse_nvidia_smi_query,
)
from tests.hosts.target import OLLAMA_PORT, StackHost

PCI_LISTING = "for d in /sys/bus/pci/devices/*; do echo $(cat $d/vendor $d/class 2>/dev/null); done"


@pytest.fixture(scope="module")
def gpu_host(host: Any, stack: StackHost) -> bool:
    """Whether this host must serve from an NVIDIA GPU."""
    if stack.settings.expect_gpu != "auto":
        return stack.settings.expect_gpu == "yes"
    return count_nvidia_pci_gpus(host.run(PCI_LISTING).stdout) > 0


def test_nvidia_smi_agrees_with_the_hardware(host: Any, gpu_host: bool) -> None:
    result = host.run(NVIDIA_SMI_QUERY)
    failure = nvidia_smi_failure(result.rc, result.stdout + result.stderr)
    if gpu_host:
        assert failure is None, f"this host has an NVIDIA GPU but nvidia-smi fails: {failure}"
        gpus = parse_nvidia_smi_query(result.stdout)
        assert gpus, "nvidia-smi lists no GPU"
        assert all(gpu.memory_total_mib > 0 for gpu in gpus), gpus
    else:
        # CPU fallback: no GPU visible, whether nvidia-smi is absent or finds nothing.
        assert failure is not None, (
            f"nvidia-smi sees a GPU on a host expected to have none:\n{result.stdout}"
        )


def test_docker_gives_ollama_the_gpu_only_where_there_is_one(
    host: Any, stack: StackHost, gpu_host: bool
) -> None:
    requests = stack.inspect("ollama")["HostConfig"]["DeviceRequests"] or []
    if gpu_host:
        runtimes = json.loads(stack.check_output("docker info --format %s", "{{json .Runtimes}}"))
        assert "nvidia" in runtimes, f"Docker has no nvidia runtime: {sorted(runtimes)}"
        assert any(
            request["Driver"] == "nvidia" and ["gpu"] in request["Capabilities"]
            for request in requests
        ), f"the Ollama container requests no NVIDIA GPU: {requests}"
    else:
        # The GPU override file is not applied: a GPU request on a host without the NVIDIA
        # runtime would keep Ollama from starting at all.
        assert requests == [], f"the Ollama container requests a device on a CPU host: {requests}"


def test_ollama_log_reports_the_compute_it_uses(stack: StackHost, gpu_host: bool) -> None:
    devices = parse_inference_compute(stack.logs("ollama"))
    found = [f"{device.library} {device.name or device.id}" for device in devices]
    if gpu_host:
        assert any(device.is_gpu for device in devices), (
            f"Ollama found no GPU; its `inference compute` lines: {found or 'none'} "
            "(driver too old, Container Toolkit missing, or the log rotated since start?)"
        )
    else:
        assert not any(device.is_gpu for device in devices), found


def test_a_loaded_model_sits_in_gpu_memory_only_where_there_is_a_gpu(
    stack: StackHost, gpu_host: bool
) -> None:
    model = stack.model(stack.mint_token())
    body = json.dumps(
        {"model": model, "prompt": "Hi", "stream": False, "options": {"num_predict": 1}}
    )
    generated = stack.exec_python(
        "proxy", probes.POST_STREAM, f"http://ollama:{OLLAMA_PORT}/api/generate", body
    )
    assert generated["status"] == 200, generated

    answer = stack.exec_python("proxy", probes.HTTP_GET, f"http://ollama:{OLLAMA_PORT}/api/ps")
    loaded = json.loads(answer["body"])["models"]
    wanted = model if ":" in model else f"{model}:latest"
    (entry,) = [m for m in loaded if m["name"] == wanted] or [None]
    assert entry is not None, f"{wanted} is not loaded after a generation: {loaded}"
    if gpu_host:
        assert entry["size_vram"] > 0, f"{wanted} was loaded into system memory, not the GPU"
    else:
        assert entry["size_vram"] == 0, entry
