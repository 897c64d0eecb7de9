"""The nvidia role's GPU branch, run by Ansible in check mode on this (GPU-less) machine.

Only the probes are stand-ins: `lspci` and `nvidia-smi` are stub commands printing recorded output
(fixtures/gpu/), reached through the role's own nvidia_lspci_command / nvidia_smi_command
variables; daemon.json is a copy in a temporary directory. Everything else is the role as it runs
on a GPU host: the same detection tasks, the same filter deciding, the same install and
configure tasks, planned in check mode. NVIDIA's key URL points at a local file because CI cannot
reach nvidia.github.io (get_url still makes its request in check mode).

Each case is a host of its own in one inventory, with its own stubs and daemon.json, so a single
check-mode run plans them all.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.playbooks.ansible_cli import FIXTURES, HostRun, PlaybookRun, run_per_host

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


@dataclass(frozen=True)
class Probed:
    """A simulated host: the recorded lspci and nvidia-smi output (None: no nvidia-smi at all),
    nvidia-smi's exit status, the daemon.json it starts with, and whether it requires a GPU."""

    lspci: str
    smi: str | None
    smi_rc: int = 0
    daemon_json: str = "daemon-docker-role.json"
    require_gpu: bool = False

    def host_vars(self, directory: Path) -> dict[str, object]:
        directory.mkdir()
        shutil.copy(GPU / self.daemon_json, directory / "daemon.json")
        return {
            "nvidia_lspci_command": stub(directory, "lspci", self.lspci),
            # A host without the driver has no nvidia-smi at all: a path that is not there.
            "nvidia_smi_command": (
                stub(directory, "nvidia-smi", self.smi, self.smi_rc)
                if self.smi
                else str(directory / "no-nvidia-smi")
            ),
            "nvidia_docker_daemon_json": str(directory / "daemon.json"),
            "nvidia_apt_gpg_key_url": (FIXTURES / "apt" / "test-signing-key.asc").as_uri(),
            "docker_manage_service": False,
            "docker_restart_command": "echo restart dockerd",
            **({"nvidia_require_gpu": True} if self.require_gpu else {}),
        }


HOSTS = {
    "rtx3060": Probed("lspci-rtx3060.txt", "nvidia-smi-rtx3060.csv"),
    "h100x2-runtime-configured": Probed(
        "lspci-h100x2.txt", "nvidia-smi-h100x2.csv", daemon_json="daemon-with-nvidia.json"
    ),
    "no-gpu": Probed("lspci-no-gpu.txt", None),
    "no-gpu-required": Probed("lspci-no-gpu.txt", None, require_gpu=True),
    "driver-not-loaded-required": Probed(
        "lspci-rtx3060.txt", "nvidia-smi-driver-not-loaded.txt", smi_rc=9, require_gpu=True
    ),
}


@pytest.fixture(scope="module")
def plans(tmp_path_factory: pytest.TempPathFactory) -> PlaybookRun:
    """Every simulated host of this module, planned in one check-mode run."""
    directory = tmp_path_factory.mktemp("nvidia-check")
    hosts = {host: probed.host_vars(directory / host) for host, probed in HOSTS.items()}
    return run_per_host(PLAYBOOK, hosts, directory, "--check")


def plan(plans: PlaybookRun, host: str) -> HostRun:
    run = plans.on(host)
    # Check mode must leave the daemon.json it was given alone.
    daemon = Path(run.vars["nvidia_docker_daemon_json"])
    assert daemon.read_text() == (GPU / HOSTS[host].daemon_json).read_text()
    return run


def gpu_fact(run: HostRun) -> dict[str, object]:
    result = run.task("Decide whether this host runs the stack on a GPU").result
    return dict(result["ansible_facts"]["nvidia_gpu"])


def test_a_gpu_host_plans_repository_toolkit_runtime_and_smoke_test(plans: PlaybookRun) -> None:
    run = plan(plans, "rtx3060")

    assert not run.failed, run.summary()
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


def test_a_configured_runtime_is_not_configured_again(plans: PlaybookRun) -> None:
    run = plan(plans, "h100x2-runtime-configured")

    assert not run.failed, run.summary()
    assert gpu_fact(run)["runtime_configured"] is True
    configure = run.task("Register the NVIDIA runtime in Docker's daemon.json")
    assert configure.status == "skipped"
    assert "runtime_configured" in configure.result["false_condition"]


def test_no_gpu_takes_the_cpu_path_without_installing_anything(plans: PlaybookRun) -> None:
    run = plan(plans, "no-gpu")

    assert not run.failed, run.summary()
    assert gpu_fact(run)["present"] is False
    message = run.task("Report the GPU decision").result["msg"]
    assert message.startswith("CPU path: No NVIDIA GPU: lspci lists no NVIDIA")
    for name in ("Install the NVIDIA Container Toolkit", "Register the NVIDIA runtime with Docker"):
        assert run.task(name).status == "skipped"


def test_a_required_gpu_that_is_missing_fails_the_play_with_the_reason(plans: PlaybookRun) -> None:
    run = plan(plans, "no-gpu-required")

    assert run.failed
    failed = run.task("Fail when a usable GPU is required but missing")
    assert failed.status == "failed"
    assert failed.result["msg"].startswith(
        "This host must run the stack on an NVIDIA GPU (nvidia_require_gpu is true) and cannot:"
        " No NVIDIA GPU"
    )


def test_a_required_gpu_whose_driver_is_broken_fails_naming_the_driver(plans: PlaybookRun) -> None:
    run = plan(plans, "driver-not-loaded-required")

    assert run.failed
    message = run.task("Fail when a usable GPU is required but missing").result["msg"]
    assert "nvidia-smi failed (exit 9)" in message
    assert "couldn't communicate with the NVIDIA driver" in message
