"""Which compute Ollama says it uses, parsed from its server log's `inference compute` lines.

The host suite (test_host_gpu.py) holds these against the GPU decision the nvidia role makes on
the same host (nvidia_role.py): a GPU host whose Ollama fell back to the CPU fails. Pure
functions over text, unit-tested on recorded logs (test_host_gpu_facts.py, samples/).
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass


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
