"""Running Ansible's own commands as a user would, and reading their results.

- `run_ansible(command, *args)`: any ansible CLI from the project's venv, with
  playbooks/ansible.cfg, returning a `CompletedProcess`.
- `run_playbook(*args)`: `ansible-playbook` (or `scripts/ansible-run`, which CI and people use)
  with the JSON stdout callback, returning a `PlaybookRun` that knows each task's result, the
  recap, and which tasks changed.
- `run_per_host(playbook, hosts, directory, *args)`: one `ansible-playbook` run for many cases,
  each case a host of its own (local connection, its own variables); `run.on(host)` is what that
  one host did. Ansible's start-up and the play's fixed costs are paid once, not once a case.
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

import yaml

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
    # The variables each host was given, for a run_per_host run.
    host_vars: dict[str, dict[str, Any]] = field(default_factory=dict)

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

    def task(self, name: str, host: str | None = None, play: str | None = None) -> TaskResult:
        """The last result of the task `name` (on `host`, in the play `play`, when given)."""
        # Role tasks are reported as "<role> : <name>".
        found = [
            t
            for t in self.tasks()
            if (t.name == name or t.name.endswith(f" : {name}")) and host in (None, t.host)
            and play in (None, t.play)
        ]
        where = (f" on {host}" if host else "") + (f" in the play {play!r}" if play else "")
        assert found, f"no task named {name!r} ran{where}; tasks were:\n{self.summary(host)}"
        return found[-1]

    def on(self, host: str) -> HostRun:
        """What `host` did in this run; it must have been in the run (the recap names it)."""
        # An empty recap: the run itself broke (a syntax error, a bad inventory); say how.
        detail = f"the recap names {sorted(self.stats)}" if self.stats else self.summary()
        assert host in self.stats, f"{host} was not in the run; {detail}"
        return HostRun(self, host)

    def changed_tasks(self) -> list[str]:
        return [f"{t.name} [{t.host}]" for t in self.tasks() if t.status == "changed"]

    @property
    def stats(self) -> dict[str, dict[str, int]]:
        return dict(self.report.get("stats", {}))

    def summary(self, host: str | None = None) -> str:
        """One line a task: status, seconds, name; then failures in full, then stderr.

        With `host`, that host's tasks and failures only; with several hosts, each line names its
        host."""
        tasks = [t for t in self.tasks() if host in (None, t.host)]
        several = host is None and len(self.stats) > 1
        lines = [
            f"{t.status:>9} {t.duration_s:6.1f}s  {t.name}" + (f" [{t.host}]" if several else "")
            for t in tasks
        ]
        for task in (t for t in tasks if t.status in ("failed", "unreachable")):
            detail = {
                key: task.result.get(key)
                for key in ("msg", "stdout", "stderr", "results")
                if task.result.get(key)
            }
            lines.append(
                f"--- FAILED: {task.name} [{task.host}]\n{json.dumps(detail, indent=2)[:6000]}"
            )
        if not self.report:
            lines.append(f"--- stdout (not JSON):\n{self.stdout[-6000:]}")
        if self.stderr.strip():
            lines.append(f"--- stderr:\n{self.stderr[-4000:]}")
        recap = self.stats if host is None else {host: self.stats.get(host)}
        lines.append(f"--- recap: {json.dumps(recap)}; rc {self.returncode}; {self.wall_s:.0f} s")
        return "\n".join(lines)


@dataclass
class HostRun:
    """One host's part of a PlaybookRun: its tasks, its recap."""

    run: PlaybookRun = field(repr=False)
    host: str

    @property
    def vars(self) -> dict[str, Any]:
        """The variables this host was given (run_per_host)."""
        return self.run.host_vars[self.host]

    @property
    def failed(self) -> bool:
        """A task failed on this host (or it became unreachable): Ansible stopped it there."""
        recap = self.run.stats[self.host]
        return recap.get("failures", 0) > 0 or recap.get("unreachable", 0) > 0

    def task(self, name: str) -> TaskResult:
        return self.run.task(name, host=self.host)

    def summary(self) -> str:
        return self.run.summary(self.host)


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


def run_per_host(
    playbook: Path, hosts: dict[str, dict[str, Any]], directory: Path, *args: str | Path
) -> PlaybookRun:
    """`ansible-playbook -i INVENTORY PLAYBOOK ARGS` once, for many independent cases.

    `hosts` maps a host name to the variables of one case. Each becomes a host of the inventory
    (directory/hosts.yml) in the group site.yml deploys to, `llm_hosts`, reached over the local
    connection with its variables as host vars; forks cover every host, so Ansible plays the
    cases side by side, each failing or passing on its own. Read a case with `run.on(host)`.
    """
    inventory = directory / "hosts.yml"
    inventory.write_text(
        yaml.safe_dump(
            {
                "llm_hosts": {
                    "hosts": {
                        host: {
                            "ansible_connection": "local",
                            "ansible_python_interpreter": "{{ ansible_playbook_python }}",
                            **variables,
                        }
                        for host, variables in hosts.items()
                    }
                }
            },
            sort_keys=False,
        )
    )
    run = run_playbook("-i", inventory, "--forks", str(len(hosts)), playbook, *args)
    run.host_vars = hosts
    return run


def case_hosts(prefix: str, cases: list[Any]) -> dict[Any, str]:
    """A host name for each case of a parametrised test: `prefix-0`, `prefix-1`, ..."""
    return {case: f"{prefix}-{index}" for index, case in enumerate(cases)}
