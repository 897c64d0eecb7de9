"""What a host's own tools say about its GPUs, parsed: PCI devices, `nvidia-smi`, Ollama's log.

The host suite (test_host_gpu.py) decides between "this host must serve from the GPU" and "this
host runs the documented CPU fallback" from facts that do not depend on the driver working: an
NVIDIA display or 3D controller on the PCI bus. Everything else — `nvidia-smi`, Docker's runtimes,
Ollama's `inference compute` log lines — is then held against that fact, so a GPU host whose
driver broke fails instead of passing as a CPU host.

Pure functions over text, so they are unit-tested on recorded output (test_host_gpu_facts.py)
without a GPU or Docker.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass

NVIDIA_PCI_VENDOR = 0x10DE
# PCI base class 0x03 is "display controller" (0x0300 VGA, 0x0302 3D, as datacenter GPUs are).
# NVIDIA's audio and USB functions on the same card have other classes and are not GPUs.
PCI_DISPLAY_CLASS = 0x03

# The fields `nvidia-smi --query-gpu` is asked for, in this order (see NVIDIA_SMI_QUERY).
NVIDIA_SMI_FIELDS = ("index", "name", "uuid", "driver_version", "memory.total")
NVIDIA_SMI_QUERY = (
    f"nvidia-smi --query-gpu={','.join(NVIDIA_SMI_FIELDS)} --format=csv,noheader,nounits"
)


def count_nvidia_pci_gpus(listing: str) -> int:
    """NVIDIA display/3D controllers in lines of `<vendor> <class>` read from sysfs.

    The listing is what `for d in /sys/bus/pci/devices/*; do echo $(cat $d/vendor)
    $(cat $d/class); done` prints: hex values such as `0x10de 0x030200`.
    """
    count = 0
    for line in listing.splitlines():
        parts = line.split()
        if len(parts) != 2:
            continue
        try:
            vendor, pci_class = int(parts[0], 16), int(parts[1], 16)
        except ValueError:
            continue
        if vendor == NVIDIA_PCI_VENDOR and pci_class >> 16 == PCI_DISPLAY_CLASS:
            count += 1
    return count


@dataclass(frozen=True)
class NvidiaGpu:
    index: int
    name: str
    uuid: str
    driver_version: str
    memory_total_mib: int


def parse_nvidia_smi_query(output: str) -> list[NvidiaGpu]:
    """GPUs from `NVIDIA_SMI_QUERY` output: one CSV line per GPU, no header, no units."""
    gpus = []
    for line in output.splitlines():
        if not line.strip():
            continue
        fields = [field.strip() for field in line.split(",")]
        if len(fields) != len(NVIDIA_SMI_FIELDS):
            raise ValueError(f"unexpected nvidia-smi line: {line!r}")
        index, name, uuid, driver, memory = fields
        gpus.append(
            NvidiaGpu(
                index=int(index),
                name=name,
                uuid=uuid,
                driver_version=driver,
                memory_total_mib=int(memory),
            )
        )
    return gpus


def parse_nvidia_smi_list(output: str) -> list[str]:
    """GPU names from `nvidia-smi -L` (`GPU 0: <name> (UUID: GPU-…)`); MIG lines are skipped."""
    return re.findall(r"^GPU \d+: (.+?) \(UUID: GPU-[^)]*\)\s*$", output, flags=re.MULTILINE)


# How `nvidia-smi` fails, from its own messages; each needs a different fix.
NVIDIA_SMI_FAILURES = {
    "driver-unreachable": "couldn't communicate with the NVIDIA driver",
    "no-devices": "No devices were found",
}


def nvidia_smi_failure(exit_status: int, output: str) -> str | None:
    """None if `nvidia-smi` worked; else why not: `not-installed`, `driver-unreachable`,
    `no-devices` or `failed`."""
    if exit_status == 0:
        return None
    if exit_status == 127 or "not found" in output:
        return "not-installed"
    for kind, message in NVIDIA_SMI_FAILURES.items():
        if message in output:
            return kind
    return "failed"


@dataclass(frozen=True)
class InferenceCompute:
    """One `msg="inference compute"` line of Ollama's server log."""

    id: str
    library: str
    name: str
    total: str
    fields: dict[str, str]

    @property
    def is_gpu(self) -> bool:
        return self.library.lower() != "cpu"


_LOGFMT_PAIR = re.compile(r'([\w.]+)=("(?:[^"\\]|\\.)*"|\S*)')


def parse_logfmt(text: str) -> dict[str, str]:
    """`key=value key="quoted value"` pairs, as Ollama's slog text handler writes them.

    A quoted key (Ollama writes `"total vram"="0 B"` in some releases) is skipped, not misread.
    """
    pairs = {}
    for key, value in _LOGFMT_PAIR.findall(text):
        if value.startswith('"'):
            value = shlex.split(value)[0] if value != '""' else ""
        pairs[key] = value
    return pairs


def parse_inference_compute(log: str) -> list[InferenceCompute]:
    """Every `inference compute` line in a log (journald or `docker logs` prefixes are fine).

    Both generations of the format are read:
    - up to v0.12.3: `id=GPU-… library=cuda variant=v12 compute=8.6 driver=12.2 name="NVIDIA A10G"
      total=… available=…`; no GPU: `id=0 library=cpu …`.
    - v0.12.4 on: `id=GPU-… filter_id="" library=CUDA compute=8.6 name=CUDA0 description="NVIDIA
      GeForce RTX 3060 Ti" libdirs=… driver=13.0 pci_id=… type=discrete total=… available=…`;
      no GPU: `id=cpu library=cpu … name=cpu description=cpu`.
    The reported name is the human one: `description` where it exists, else `name`.
    """
    devices = []
    for line in log.splitlines():
        marker = line.find('msg="inference compute"')
        if marker < 0:
            continue
        fields = parse_logfmt(line[marker:])
        devices.append(
            InferenceCompute(
                id=fields.get("id", ""),
                library=fields.get("library", ""),
                name=fields.get("description") or fields.get("name", ""),
                total=fields.get("total", ""),
                fields=fields,
            )
        )
    return devices


def reports_no_gpu(log: str) -> bool:
    """Whether Ollama said it found no GPU (older releases log this before the CPU line)."""
    return 'msg="no compatible GPUs were discovered"' in log
