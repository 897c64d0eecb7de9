"""Running Ansible's own commands as a user would, and reading their results.

- `run_ansible(command, *args)`: any ansible CLI from the project's venv, with
  playbooks/ansible.cfg, returning a `CompletedProcess`.
- `run_playbook(*args)`: `ansible-playbook` (or `scripts/ansible-run`, which CI and people use)
  with the JSON stdout callback, returning a `PlaybookRun` that knows each task's result, the
  recap, and which tasks changed.
- `load_plugin(path)`: a role's filter plugin module, imported by path as Ansible loads it.

Both take `timeout` as the budget on an idle machine and stretch it by the scale factor
(tests/support/timing.py).

Everything here runs the real tools; nothing is mocked.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from tests.support.timing import scaled

REPO = Path(__file__).resolve().parents[2]
PLAYBOOKS = REPO / "playbooks"
ROLES = PLAYBOOKS / "roles"
FIXTURES = Path(__file__).resolve().parent / "fixtures"
VENV_BIN = Path(sys.executable).parent
ANSIBLE_RUN = REPO / "scripts" / "ansible-run"
CI_INVENTORY = PLAYBOOKS / "inventories" / "ci" / "hosts.yml"
EXAMPLE_INVENTORY = PLAYBOOKS / "inventories" / "example" / "hosts.yml"


def ansible_env(**extra: str) -> dict[str, str]:
    """The environment scripts/ansible-run sets up, plus `extra`."""
    env = dict(os.environ)
    env.update(
        ANSIBLE_CONFIG=str(PLAYBOOKS / "ansible.cfg"),
        ANSIBLE_ROLES_PATH=str(ROLES),
        ANSIBLE_NOCOLOR="1",
        ANSIBLE_FORCE_COLOR="0",
        PATH=f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}",
    )
    env.update(extra)
    if not env.get("ANSIBLE_CALLBACKS_ENABLED") and not extra.get("_keep_empty_callbacks"):
        env.pop("ANSIBLE_CALLBACKS_ENABLED", None)
    env.pop("_keep_empty_callbacks", None)
    return env


def load_plugin(path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(path.stem, path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_ansible(
    command: str, *args: str | Path, timeout: float = 300, **env: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(VENV_BIN / command), *map(str, args)],
        cwd=REPO,
        env=ansible_env(**env),
        capture_output=True,
        text=True,
        timeout=scaled(timeout),
        stdin=subprocess.DEVNULL,
    )


@dataclass
class TaskResult:
    play: str
    name: str
    host: str
    result: dict[str, Any]
    duration_s: float

    @property
    def status(self) -> str:
        r = self.result
        if r.get("unreachable"):
            return "unreachable"
        if r.get("failed") and not r.get("ignore_errors"):
            return "failed"
        if r.get("skipped") and not r.get("results"):
            return "skipped"
        if r.get("changed"):
            return "changed"
        return "ok"


@dataclass
class PlaybookRun:
    """One ansible-playbook run read through the ansible.posix.json callback."""

    command: list[str]
    returncode: int
    stdout: str
    stderr: str
    wall_s: float
    report: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def parse(cls, command: list[str], process: subprocess.CompletedProcess[str], wall_s: float):
        # The JSON document is the whole of stdout, unless a script printed lines before it
        # (scripts/ansible-run ci prints the engine's and the images' progress first).
        text = process.stdout
        start = text.find("\n{") + 1 if not text.startswith("{") else 0
        try:
            report = json.loads(text[start:]) if text.strip() else {}
        except ValueError:
            report = {}
        return cls(command, process.returncode, process.stdout, process.stderr, wall_s, report)

    def tasks(self) -> Iterator[TaskResult]:
        for play in self.report.get("plays", []):
            play_name = play["play"]["name"]
            for task in play["tasks"]:
                duration = task["task"].get("duration", {})
                for host, result in task["hosts"].items():
                    yield TaskResult(
                        play_name,
                        task["task"]["name"],
                        host,
                        result,
                        _seconds(duration.get("start"), duration.get("end")),
                    )

    def task(self, name: str) -> TaskResult:
        # Role tasks are reported as "<role> : <name>".
        found = [t for t in self.tasks() if t.name == name or t.name.endswith(f" : {name}")]
        assert found, f"no task named {name!r} ran; tasks were:\n{self.summary()}"
        return found[-1]

    def changed_tasks(self) -> list[str]:
        return [f"{t.name} [{t.host}]" for t in self.tasks() if t.status == "changed"]

    def failed_tasks(self) -> list[TaskResult]:
        return [t for t in self.tasks() if t.status in ("failed", "unreachable")]

    @property
    def stats(self) -> dict[str, dict[str, int]]:
        return dict(self.report.get("stats", {}))

    def summary(self) -> str:
        """One line a task: status, seconds, name; then failures in full, then stderr."""
        lines = [f"{t.status:>9} {t.duration_s:6.1f}s  {t.name}" for t in self.tasks()]
        for task in self.failed_tasks():
            detail = {
                key: task.result.get(key)
                for key in ("msg", "stdout", "stderr", "results")
                if task.result.get(key)
            }
            lines.append(f"--- FAILED: {task.name}\n{json.dumps(detail, indent=2)[:6000]}")
        if not self.report:
            lines.append(f"--- stdout (not JSON):\n{self.stdout[-6000:]}")
        if self.stderr.strip():
            lines.append(f"--- stderr:\n{self.stderr[-4000:]}")
        lines.append(
            f"--- recap: {json.dumps(self.stats)}; rc {self.returncode}; {self.wall_s:.0f} s"
        )
        return "\n".join(lines)


def _seconds(start: str | None, end: str | None) -> float:
    from datetime import datetime

    if not start or not end:
        return 0.0
    parse = datetime.fromisoformat
    return (parse(end.replace("Z", "+00:00")) - parse(start.replace("Z", "+00:00"))).total_seconds()


def run_playbook(
    *args: str | Path,
    via_script: bool = False,
    timeout: float = 900,
    env: dict[str, str] | None = None,
) -> PlaybookRun:
    """ansible-playbook ARGS (or scripts/ansible-run ARGS) with JSON output."""
    import time

    command = [str(ANSIBLE_RUN)] if via_script else [str(VENV_BIN / "ansible-playbook")]
    command += [str(arg) for arg in args]
    started = time.monotonic()
    process = subprocess.run(
        command,
        cwd=REPO,
        env=ansible_env(
            ANSIBLE_STDOUT_CALLBACK="ansible.posix.json",
            # No other callback: profile_tasks would print into the JSON document (which has
            # the timings anyway). Empty tells scripts/ansible-run to enable none.
            ANSIBLE_CALLBACKS_ENABLED="",
            _keep_empty_callbacks="1" if via_script else "",
            **(env or {}),
        ),
        capture_output=True,
        text=True,
        timeout=scaled(timeout),
        stdin=subprocess.DEVNULL,
    )
    return PlaybookRun.parse(command, process, time.monotonic() - started)
