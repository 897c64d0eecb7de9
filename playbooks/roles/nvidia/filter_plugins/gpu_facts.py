"""The nvidia role's GPU decision, as Jinja filters (unit-tested in tests/playbooks/).

The role runs three read-only probes and hands their registered results here:

- `lspci -mm -nn`: every PCI device with its class and vendor codes. An NVIDIA GPU is vendor
  `10de` with class `0300` (VGA controller: consumer cards) or `0302` (3D controller: datacenter
  cards such as the A100 or H100). The card's HDMI audio and USB functions are also vendor 10de
  and are not GPUs, so the class matters.
- `nvidia-smi --query-gpu=index,name,driver_version,memory.total,uuid
  --format=csv,noheader,nounits`:
  exit 0 with one line per GPU when the driver works; when it is missing, Ansible's command
  module reports rc 2 and `[Errno 2] No such file or directory`; when it is installed but not
  loaded nvidia-smi exits 9 with "couldn't communicate with the NVIDIA driver".
- Docker's daemon.json text: whether the `nvidia` runtime is registered (and is the default).

`nvidia_gpu_facts` turns these into the `nvidia_gpu` fact; `nvidia_gpu_requirement_error` says why a
host that must have a GPU cannot use one ("" when nothing is wrong).
"""

from __future__ import annotations

import csv
import json
import re
import shlex
from typing import Any

NVIDIA_VENDOR = "10de"
GPU_CLASSES = {"0300": "VGA compatible controller", "0302": "3D controller"}
_CODE = re.compile(r"\s*\[([0-9a-fA-F]{4})\]\s*$")

try:  # Ansible present (as a plugin); the unit tests import this file without it too.
    from ansible.errors import AnsibleFilterError
except ImportError:  # pragma: no cover - exercised only outside Ansible

    class AnsibleFilterError(Exception):  # type: ignore[no-redef]
        """Stand-in so the module imports without Ansible."""


def _code_and_label(field: str) -> tuple[str, str]:
    """`'NVIDIA Corporation [10de]'` -> `('10de', 'NVIDIA Corporation')`."""
    match = _CODE.search(field)
    if not match:
        return "", field.strip()
    return match.group(1).lower(), field[: match.start()].strip()


def parse_lspci(stdout: str) -> list[dict[str, str]]:
    """The NVIDIA display/3D controllers in `lspci -mm -nn` output."""
    gpus = []
    for line in stdout.splitlines():
        try:
            fields = shlex.split(line)
        except ValueError:
            continue
        if len(fields) < 4:
            continue
        slot, device_class, vendor, device = fields[:4]
        class_code, class_label = _code_and_label(device_class)
        vendor_code, _ = _code_and_label(vendor)
        device_code, device_label = _code_and_label(device)
        if vendor_code == NVIDIA_VENDOR and class_code in GPU_CLASSES:
            gpus.append(
                {
                    "slot": slot,
                    "class": class_label,
                    "device_id": f"{vendor_code}:{device_code}",
                    "name": device_label,
                }
            )
    return gpus


def parse_nvidia_smi(stdout: str) -> list[dict[str, Any]]:
    """Rows of `nvidia-smi --query-gpu=index,name,driver_version,memory.total,uuid` CSV."""
    gpus = []
    for row in csv.reader(stdout.splitlines(), skipinitialspace=True):
        if len(row) < 3 or not row[0].strip().isdigit():
            continue
        memory = row[3].strip() if len(row) > 3 else ""
        gpus.append(
            {
                "index": int(row[0]),
                "name": row[1].strip(),
                "driver_version": row[2].strip(),
                "memory_mib": int(memory) if memory.isdigit() else None,
                "uuid": row[4].strip() if len(row) > 4 else "",
            }
        )
    return gpus


def parse_daemon_json(text: str) -> dict[str, Any]:
    """Docker's daemon.json as a dict; an absent or empty file is `{}`."""
    if not text or not text.strip():
        return {}
    try:
        config = json.loads(text)
    except ValueError as exc:
        raise AnsibleFilterError(
            f"Docker's daemon.json is not valid JSON ({exc}); fix it by hand"
        ) from exc
    if not isinstance(config, dict):
        raise AnsibleFilterError("Docker's daemon.json must hold a JSON object")
    return config


def _output(result: dict[str, Any]) -> str:
    """The most telling text of a failed command: stderr, stdout, or Ansible's own message."""
    for key in ("stderr", "stdout", "msg"):
        text = str(result.get(key) or "").strip()
        if text:
            return " ".join(text.split())
    return ""


def _command_missing(result: dict[str, Any]) -> bool:
    text = _output(result)
    return result.get("rc") in (2, 127) and (
        "No such file or directory" in text or "not found" in text
    )


def _count_names(names: list[str]) -> str:
    """`['A', 'A', 'B']` -> `'2 x A, B'`."""
    counted: dict[str, int] = {}
    for name in names:
        counted[name] = counted.get(name, 0) + 1
    return ", ".join(f"{n} x {name}" if n > 1 else name for name, n in counted.items())


def _plural(count: int, word: str) -> str:
    return f"{count} {word}{'' if count == 1 else 's'}"


def nvidia_gpu_facts(
    lspci_result: dict[str, Any],
    smi_result: dict[str, Any],
    daemon_json_text: str = "",
) -> dict[str, Any]:
    """The `nvidia_gpu` fact from the registered lspci and nvidia-smi results and daemon.json."""
    lspci_result = dict(lspci_result or {})
    smi_result = dict(smi_result or {})
    lspci_ok = lspci_result.get("rc") == 0
    pci_gpus = parse_lspci(str(lspci_result.get("stdout") or "")) if lspci_ok else []
    smi_gpus = (
        parse_nvidia_smi(str(smi_result.get("stdout") or "")) if smi_result.get("rc") == 0 else []
    )

    config = parse_daemon_json(daemon_json_text)
    runtimes = config.get("runtimes") or {}
    runtime_configured = isinstance(runtimes, dict) and "nvidia" in runtimes
    runtime_is_default = config.get("default-runtime") == "nvidia"

    driver_ok = bool(smi_gpus)
    present = driver_ok or bool(pci_gpus)
    if driver_ok:
        names = [gpu["name"] for gpu in smi_gpus]
        driver_version = smi_gpus[0]["driver_version"]
    else:
        names = [gpu["name"] for gpu in pci_gpus]
        driver_version = ""

    if driver_ok:
        runtime = "configured" if runtime_configured else "not configured yet"
        reason = (
            f"{_plural(len(names), 'NVIDIA GPU')} ({_count_names(names)}), driver {driver_version};"
            f" Docker's NVIDIA runtime is {runtime}."
        )
    elif pci_gpus:
        seen = f"lspci shows {_plural(len(pci_gpus), 'NVIDIA GPU')} ({_count_names(names)})"
        if _command_missing(smi_result):
            reason = (
                f"{seen} but nvidia-smi is not installed: install the NVIDIA driver"
                " (Debian: apt install nvidia-driver; Ubuntu: ubuntu-drivers install) and reboot."
            )
        elif smi_result.get("rc") == 0:
            reason = f"{seen} but nvidia-smi lists none: the driver does not manage them."
        else:
            reason = (
                f"{seen} but nvidia-smi failed (exit {smi_result.get('rc')}): {_output(smi_result)}"
                " - the driver is installed but not working; reboot after installing it, or check"
                " `dmesg | grep -i nvidia`."
            )
    else:
        lspci_note = (
            "lspci lists no NVIDIA display or 3D controller"
            if lspci_ok
            else f"lspci could not run ({_output(lspci_result) or 'no output'})"
        )
        smi_note = (
            "nvidia-smi is not installed"
            if _command_missing(smi_result)
            else f"nvidia-smi found no GPU (exit {smi_result.get('rc')}: {_output(smi_result)})"
        )
        reason = f"No NVIDIA GPU: {lspci_note} and {smi_note}."

    return {
        "present": present,
        "driver_ok": driver_ok,
        "driver_version": driver_version,
        "count": len(names),
        "names": names,
        "pci_devices": pci_gpus,
        "runtime_configured": runtime_configured,
        "runtime_is_default": runtime_is_default,
        "use_gpu": present and driver_ok,
        "reason": reason,
    }


def nvidia_gpu_requirement_error(facts: dict[str, Any], require_gpu: Any = False) -> str:
    """Why a host that must have a GPU (`nvidia_require_gpu`) cannot use one; "" if it can."""
    required = (
        require_gpu
        if isinstance(require_gpu, bool)
        else str(require_gpu).lower()
        in (
            "1",
            "true",
            "yes",
            "on",
        )
    )
    if not required or facts.get("use_gpu"):
        return ""
    return (
        "This host must run the stack on an NVIDIA GPU (nvidia_require_gpu is true) and cannot:"
        f" {facts.get('reason', 'no GPU was detected.')}"
    )


class FilterModule:
    """Ansible's entry point for the filters above."""

    def filters(self) -> dict[str, Any]:
        return {
            "nvidia_gpu_facts": nvidia_gpu_facts,
            "nvidia_gpu_requirement_error": nvidia_gpu_requirement_error,
        }
