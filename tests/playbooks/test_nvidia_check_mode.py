"""The nvidia role's GPU branch, run by Ansible in check mode on this (GPU-less) machine.

Only the probes are stand-ins: `lspci` and `nvidia-smi` are stub commands printing recorded output
(fixtures/gpu/), reached through the role's own nvidia_lspci_command / nvidia_smi_command
variables; daemon.json is a copy in a temporary directory. Everything else is the role as it runs
on a GPU host: the same detection tasks, the same filter deciding, the same install and
configure tasks, planned in check mode. NVIDIA's key URL points at a local file because CI cannot
reach nvidia.github.io (get_url still makes its request in check mode).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.playbooks.ansible_cli import FIXTURES, PlaybookRun, run_playbook

PLAYBOOK = Path(__file__).resolve().parent / "nvidia-check.yml"
GPU = FIXTURES / "gpu"
NOT_IN_CHECK_MODE = "Command would have run if not in check mode"

pytestmark = pytest.mark.timeout(300)


def stub(directory: Path, name: str, fixture: str | None, rc: int = 0) -> str:
    path = directory / name
    output = f"cat {GPU / fixture}\n" if fixture else ""
    path.write_text(f"#!/bin/sh\n{output}exit {rc}\n")
    path.chmod(0o755)
    return str(path)


def plan(
    tmp_path: Path,
    lspci: str,
    smi: str | None,
    smi_rc: int = 0,
    daemon_json: str = "daemon-docker-role.json",
    **extra: object,
) -> PlaybookRun:
    daemon = tmp_path / "daemon.json"
    shutil.copy(GPU / daemon_json, daemon)
    variables = {
        "nvidia_lspci_command": stub(tmp_path, "lspci", lspci),
        # A host without the driver has no nvidia-smi at all: point at a path that is not there.
        "nvidia_smi_command": (
            stub(tmp_path, "nvidia-smi", smi, smi_rc) if smi else str(tmp_path / "no-nvidia-smi")
        ),
        "nvidia_docker_daemon_json": str(daemon),
        "nvidia_apt_gpg_key_url": (FIXTURES / "apt" / "test-signing-key.asc").as_uri(),
        "docker_manage_service": False,
        "docker_restart_command": "echo restart dockerd",
        **extra,
    }
    run = run_playbook("--check", "-i", "localhost,", PLAYBOOK, "-e", json.dumps(variables))
    # Check mode must leave the daemon.json it was given alone.
    assert daemon.read_text() == (GPU / daemon_json).read_text()
    return run


def gpu_fact(run: PlaybookRun) -> dict[str, object]:
    result = run.task("Decide whether this host runs the stack on a GPU").result
    return dict(result["ansible_facts"]["nvidia_gpu"])


def test_a_gpu_host_plans_repository_toolkit_runtime_and_smoke_test(tmp_path: Path) -> None:
    run = plan(tmp_path, "lspci-rtx3060.txt", "nvidia-smi-rtx3060.csv")

    assert run.returncode == 0, run.summary()
    fact = gpu_fact(run)
    assert fact["use_gpu"] and fact["count"] == 1 and fact["driver_version"] == "550.120"
    assert fact["runtime_configured"] is False
    assert run.task("Report the GPU decision").result["msg"].startswith("GPU path: 1 NVIDIA GPU")
    assert run.task("Download the key that signs NVIDIA's apt repository").status == "changed"
    assert run.task("Ensure NVIDIA's Container Toolkit apt repository is configured").status == (
        "changed"
    )
    # The package is not in any index until the repository exists; the real run installs it
    # right after adding the repository.
    install = run.task("Ensure the NVIDIA Container Toolkit is installed")
    assert install.status == "skipped"
    assert install.result["false_condition"].startswith("not (ansible_check_mode")
    configure = run.task("Register the NVIDIA runtime in Docker's daemon.json")
    assert configure.status == "skipped" and configure.result["msg"] == NOT_IN_CHECK_MODE
    smoke = run.task("Run nvidia-smi in a container with every GPU attached")
    assert smoke.status == "skipped" and smoke.result["msg"] == NOT_IN_CHECK_MODE


def test_a_configured_runtime_is_not_configured_again(tmp_path: Path) -> None:
    run = plan(
        tmp_path, "lspci-h100x2.txt", "nvidia-smi-h100x2.csv", daemon_json="daemon-with-nvidia.json"
    )

    assert run.returncode == 0, run.summary()
    assert gpu_fact(run)["runtime_configured"] is True
    configure = run.task("Register the NVIDIA runtime in Docker's daemon.json")
    assert configure.status == "skipped"
    assert "runtime_configured" in configure.result["false_condition"]


def test_no_gpu_takes_the_cpu_path_without_installing_anything(tmp_path: Path) -> None:
    run = plan(tmp_path, "lspci-no-gpu.txt", None)

    assert run.returncode == 0, run.summary()
    assert gpu_fact(run)["present"] is False
    message = run.task("Report the GPU decision").result["msg"]
    assert message.startswith("CPU path: No NVIDIA GPU: lspci lists no NVIDIA")
    for name in ("Install the NVIDIA Container Toolkit", "Register the NVIDIA runtime with Docker"):
        assert run.task(name).status == "skipped"


def test_a_required_gpu_that_is_missing_fails_the_play_with_the_reason(tmp_path: Path) -> None:
    run = plan(tmp_path, "lspci-no-gpu.txt", None, nvidia_require_gpu=True)

    assert run.returncode != 0
    failed = run.task("Fail when a usable GPU is required but missing")
    assert failed.status == "failed"
    assert failed.result["msg"].startswith(
        "This host must run the stack on an NVIDIA GPU (nvidia_require_gpu is true) and cannot:"
        " No NVIDIA GPU"
    )


def test_a_required_gpu_whose_driver_is_broken_fails_naming_the_driver(tmp_path: Path) -> None:
    run = plan(
        tmp_path,
        "lspci-rtx3060.txt",
        "nvidia-smi-driver-not-loaded.txt",
        smi_rc=9,
        nvidia_require_gpu=True,
    )

    assert run.returncode != 0
    message = run.task("Fail when a usable GPU is required but missing").result["msg"]
    assert "nvidia-smi failed (exit 9)" in message
    assert "couldn't communicate with the NVIDIA driver" in message
