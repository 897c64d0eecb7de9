"""The nvidia role's GPU decision (roles/nvidia/filter_plugins/gpu_facts.py) on recorded output.

The filter gets what Ansible registers for each probe: `{"rc", "stdout", "stderr", "msg"}`. A
missing command is what Ansible's command module reports for it: rc 2 and "[Errno 2] No such file
or directory" in `msg`; run through a shell, as the host suite (tests/hosts) runs the same probes
and hands them to the same filter, it is rc 127 and "not found".
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.playbooks.ansible_cli import FIXTURES, ROLES, load_plugin

GPU = FIXTURES / "gpu"

gpu_facts = load_plugin(ROLES / "nvidia" / "filter_plugins" / "gpu_facts.py")


def ran(fixture: str, rc: int = 0) -> dict[str, Any]:
    return {"rc": rc, "stdout": (GPU / fixture).read_text(), "stderr": ""}


MISSING = {
    "rc": 2,
    "stdout": "",
    "stderr": "",
    "msg": "[Errno 2] No such file or directory: b'nvidia-smi'",
}
DAEMON_PLAIN = (GPU / "daemon-docker-role.json").read_text()
DAEMON_NVIDIA = (GPU / "daemon-with-nvidia.json").read_text()


def test_a_consumer_card_with_a_working_driver_is_used() -> None:
    facts = gpu_facts.nvidia_gpu_facts(
        ran("lspci-rtx3060.txt"), ran("nvidia-smi-rtx3060.csv"), DAEMON_PLAIN
    )

    assert facts["present"] and facts["driver_ok"] and facts["use_gpu"]
    assert facts["count"] == 1
    assert facts["names"] == ["NVIDIA GeForce RTX 3060"]
    assert facts["driver_version"] == "550.120"
    assert facts["runtime_configured"] is False
    assert "not configured yet" in facts["reason"]


def test_the_cards_audio_function_and_the_igpu_are_not_gpus() -> None:
    devices = gpu_facts.parse_lspci(ran("lspci-rtx3060.txt")["stdout"])

    assert [(d["slot"], d["device_id"]) for d in devices] == [("01:00.0", "10de:2504")]
    assert devices[0]["name"] == "GA106 [GeForce RTX 3060 Lite Hash Rate]"


def test_datacenter_3d_controllers_count_and_an_nvswitch_does_not() -> None:
    devices = gpu_facts.parse_lspci(ran("lspci-h100x2.txt")["stdout"])
    facts = gpu_facts.nvidia_gpu_facts(
        ran("lspci-h100x2.txt"), ran("nvidia-smi-h100x2.csv"), DAEMON_NVIDIA
    )

    assert [d["class"] for d in devices] == ["3D controller", "3D controller"]
    assert facts["count"] == 2 and facts["use_gpu"]
    assert facts["runtime_configured"] is True
    assert facts["runtime_is_default"] is False
    assert facts["reason"].startswith("2 NVIDIA GPUs (2 x NVIDIA H100 80GB HBM3), driver 550.90.07")


def test_a_gpu_without_nvidia_smi_means_the_driver_is_missing() -> None:
    facts = gpu_facts.nvidia_gpu_facts(ran("lspci-rtx3060.txt"), MISSING, "")

    assert facts["present"] is True
    assert facts["driver_ok"] is False and facts["use_gpu"] is False
    assert facts["count"] == 1
    assert facts["names"] == ["GA106 [GeForce RTX 3060 Lite Hash Rate]"]
    assert "nvidia-smi is not installed: install the NVIDIA driver" in facts["reason"]


def test_a_gpu_whose_driver_is_not_loaded_names_nvidia_smis_complaint() -> None:
    failing = ran("nvidia-smi-driver-not-loaded.txt", rc=9)

    facts = gpu_facts.nvidia_gpu_facts(ran("lspci-h100x2.txt"), failing, "")

    assert facts["present"] and not facts["use_gpu"]
    assert "nvidia-smi failed (exit 9)" in facts["reason"]
    assert "couldn't communicate with the NVIDIA driver" in facts["reason"]


def test_no_nvidia_hardware_is_the_cpu_path() -> None:
    facts = gpu_facts.nvidia_gpu_facts(ran("lspci-no-gpu.txt"), MISSING, "")

    assert facts["present"] is False and facts["use_gpu"] is False
    assert facts["count"] == 0 and facts["names"] == []
    assert facts["reason"] == (
        "No NVIDIA GPU: lspci lists no NVIDIA display or 3D controller and nvidia-smi is not"
        " installed."
    )


def test_without_lspci_nvidia_smi_alone_decides() -> None:
    no_lspci = {"rc": 2, "stdout": "", "msg": "[Errno 2] No such file or directory: b'lspci'"}

    assert gpu_facts.nvidia_gpu_facts(no_lspci, ran("nvidia-smi-rtx3060.csv"))["use_gpu"]
    facts = gpu_facts.nvidia_gpu_facts(no_lspci, MISSING)
    assert not facts["present"]
    assert "lspci could not run ([Errno 2] No such file or directory" in facts["reason"]


def test_nvidia_smi_without_devices_is_not_a_gpu() -> None:
    none_found = ran("nvidia-smi-no-devices.txt", rc=6)

    facts = gpu_facts.nvidia_gpu_facts(ran("lspci-no-gpu.txt"), none_found)

    assert not facts["present"]
    assert "nvidia-smi found no GPU (exit 6: No devices were found)" in facts["reason"]


def test_two_different_cards_are_each_read_with_memory_driver_and_uuid() -> None:
    gpus = gpu_facts.parse_nvidia_smi(ran("nvidia-smi-rtx3060-a10g.csv")["stdout"])
    facts = gpu_facts.nvidia_gpu_facts(
        ran("lspci-rtx3060.txt"), ran("nvidia-smi-rtx3060-a10g.csv")
    )

    assert [gpu["index"] for gpu in gpus] == [0, 1]
    assert [gpu["memory_mib"] for gpu in gpus] == [12288, 23028]
    assert {gpu["driver_version"] for gpu in gpus} == {"550.54.14"}
    assert all(gpu["uuid"].startswith("GPU-") for gpu in gpus)
    assert facts["names"] == ["NVIDIA GeForce RTX 3060", "NVIDIA A10G"]
    assert facts["reason"].startswith(
        "2 NVIDIA GPUs (NVIDIA GeForce RTX 3060, NVIDIA A10G), driver 550.54.14;"
    )


def test_nvidia_smi_output_of_another_shape_is_not_read_as_a_gpu() -> None:
    assert gpu_facts.parse_nvidia_smi("NVIDIA GeForce RTX 3060, 12288 MiB\n") == []


def test_lines_lspci_cannot_have_printed_are_ignored() -> None:
    noise = (
        "pcilib: Cannot open /proc/bus/pci\n"
        '01:00.0 "VGA compatible controller [0300]" "NVIDIA Corporation [10de]\n'
        "\n"
    )

    assert gpu_facts.parse_lspci(noise + ran("lspci-rtx3060.txt")["stdout"]) == (
        gpu_facts.parse_lspci(ran("lspci-rtx3060.txt")["stdout"])
    )


@pytest.mark.parametrize(
    ("smi", "reason"),
    [
        (ran("nvidia-smi-driver-not-loaded.txt", rc=9),
         "nvidia-smi failed (exit 9): NVIDIA-SMI has failed because it couldn't communicate"),
        (ran("nvidia-smi-no-devices.txt", rc=6),
         "nvidia-smi failed (exit 6): No devices were found"),
        ({"rc": 127, "stdout": "", "stderr": "sh: 1: nvidia-smi: not found\n"},
         "but nvidia-smi is not installed: install the NVIDIA driver"),
        ({"rc": 1, "stdout": "Unable to determine the device handle for GPU0000:01:00.0: "
                             "Unknown Error\n", "stderr": ""},
         "nvidia-smi failed (exit 1): Unable to determine the device handle"),
    ],
    ids=["driver-not-loaded", "no-devices", "not-installed-in-a-shell", "other-failure"],
)
def test_each_way_nvidia_smi_fails_on_a_gpu_host_is_named(smi: dict[str, Any], reason: str
                                                         ) -> None:
    facts = gpu_facts.nvidia_gpu_facts(ran("lspci-rtx3060.txt"), smi)

    assert facts["present"] and not facts["driver_ok"] and not facts["use_gpu"]
    assert reason in facts["reason"]


@pytest.mark.parametrize(
    ("lspci", "smi", "required", "error"),
    [
        ("lspci-rtx3060.txt", "nvidia-smi-rtx3060.csv", True, ""),
        ("lspci-no-gpu.txt", None, False, ""),
        ("lspci-rtx3060.txt", None, False, ""),
        ("lspci-no-gpu.txt", None, True, "No NVIDIA GPU: lspci lists no NVIDIA"),
        ("lspci-rtx3060.txt", None, True, "nvidia-smi is not installed"),
        ("lspci-rtx3060.txt", None, "yes", "nvidia-smi is not installed"),
    ],
)
def test_only_a_host_that_requires_a_gpu_fails_without_one(
    lspci: str, smi: str | None, required: bool | str, error: str
) -> None:
    facts = gpu_facts.nvidia_gpu_facts(ran(lspci), ran(smi) if smi else MISSING)

    message = gpu_facts.nvidia_gpu_requirement_error(facts, required)

    if error:
        assert message.startswith("This host must run the stack on an NVIDIA GPU")
        assert error in message
    else:
        assert message == ""


def test_the_default_runtime_is_read_from_daemon_json() -> None:
    config = json.dumps(
        {"default-runtime": "nvidia", "runtimes": {"nvidia": {"path": "nvidia-container-runtime"}}}
    )

    facts = gpu_facts.nvidia_gpu_facts(
        ran("lspci-rtx3060.txt"), ran("nvidia-smi-rtx3060.csv"), config
    )

    assert facts["runtime_configured"] and facts["runtime_is_default"]


def test_a_broken_daemon_json_is_an_error_not_a_guess() -> None:
    with pytest.raises(gpu_facts.AnsibleFilterError, match="daemon.json is not valid JSON"):
        gpu_facts.nvidia_gpu_facts(ran("lspci-no-gpu.txt"), MISSING, "{not json")


def test_ansible_loads_the_filters_under_their_names() -> None:
    assert set(gpu_facts.FilterModule().filters()) == {
        "nvidia_gpu_facts",
        "nvidia_gpu_requirement_error",
    }
