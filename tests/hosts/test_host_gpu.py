"""GPU: a host with an NVIDIA GPU serves from it; a host without one runs the CPU fallback.

Whether the host has a GPU is read from the PCI bus with the nvidia role's own probe and parser
(nvidia_role.py), or set with --stack-expect-gpu; never from the driver: a GPU host whose
driver, Container Toolkit or Ollama discovery broke must fail here, not pass as a CPU host. On a
CPU host (CI included) the checks assert the documented fallback: no GPU is visible, the Ollama
container requests none, and models load into system memory.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.hosts import probes
from tests.hosts.nvidia_role import LSPCI, NVIDIA_SMI, gpu_facts, registered
from tests.hosts.ollama_log import parse_inference_compute
from tests.hosts.target import OLLAMA_PORT, StackHost


@pytest.fixture(scope="module")
def gpu_host(host: Any, stack: StackHost) -> bool:
    """Whether this host must serve from an NVIDIA GPU."""
    if stack.settings.expect_gpu != "auto":
        return stack.settings.expect_gpu == "yes"
    listing = host.run(LSPCI)
    # Without lspci the answer would come from the driver alone, which is what is under test.
    assert listing.rc == 0, (
        f"`{LSPCI}` failed ({listing.stderr.strip()}): install pciutils on the host, or say "
        "what it has with --stack-expect-gpu"
    )
    return bool(gpu_facts.parse_lspci(listing.stdout))


def test_nvidia_smi_agrees_with_the_hardware(host: Any, gpu_host: bool) -> None:
    smi = host.run(NVIDIA_SMI)
    facts = gpu_facts.nvidia_gpu_facts(registered(host.run(LSPCI)), registered(smi))
    if gpu_host:
        assert facts["driver_ok"], f"this host has an NVIDIA GPU, but: {facts['reason']}"
        gpus = gpu_facts.parse_nvidia_smi(smi.stdout)
        assert all(gpu["memory_mib"] for gpu in gpus), gpus
    else:
        # CPU fallback: no GPU visible, whether nvidia-smi is absent or finds nothing.
        assert not facts["driver_ok"], (
            f"nvidia-smi sees a GPU on a host expected to have none: {facts['reason']}"
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
