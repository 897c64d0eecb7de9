"""The nvidia role's GPU decision, made again on the host under test: same probes, same parser.

The role (playbooks/roles/nvidia) decides whether a host serves from a GPU by running two
read-only probes, `lspci` and `nvidia-smi`, and handing what they printed to its filter plugin
(filter_plugins/gpu_facts.py). The host suite runs the very commands the role's tasks run (read
from tasks/detect.yml and the role's defaults) and calls the same plugin, so a deployment and its
verification cannot disagree about what a host has.
"""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any

import jinja2
import yaml

from tests.playbooks.ansible_cli import ROLES, load_plugin

ROLE = ROLES / "nvidia"
gpu_facts = load_plugin(ROLE / "filter_plugins" / "gpu_facts.py")


def _yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def probe_command(registered: str) -> str:
    """The shell command of the role's probe whose result it registers as `registered`, with the
    role's default program names (`nvidia_smi_command`, `nvidia_lspci_command`)."""
    (task,) = [t for t in _yaml(ROLE / "tasks" / "detect.yml") if t.get("register") == registered]
    defaults = _yaml(ROLE / "defaults" / "main.yml")
    argv = task["ansible.builtin.command"]["argv"]
    return shlex.join(jinja2.Template(str(arg)).render(defaults) for arg in argv)


LSPCI = probe_command("nvidia_lspci")
NVIDIA_SMI = probe_command("nvidia_smi")


def registered(result: Any) -> dict[str, Any]:
    """A testinfra command result as Ansible registers a command's: what the plugin reads."""
    return {"rc": result.rc, "stdout": result.stdout, "stderr": result.stderr}
