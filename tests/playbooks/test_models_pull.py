"""The models role's pulls, played for real against the Ollama simulator: each missing model is
pulled, its percentage printed at every poll while the download runs, and a model the registry
does not have fails the play naming it.

The role runs its script with `docker exec -i <proxy container> <python> - …`; here a `docker`
on PATH that runs the rest of that command on this machine stands in for the container, so the
role's own tasks run unchanged (local connection, a temporary directory, the simulator on a
free port: nothing of the host's is touched).
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.playbooks.ansible_cli import PlaybookRun, run_playbook
from tests.support.simulator.process import SimulatorProcess, run_simulator
from tests.support.timing import scaled

DOCKER_EXEC_HERE = """#!/bin/sh
# `docker exec -i CONTAINER COMMAND...` as the models role calls it: COMMAND, here.
[ "$1" = exec ] && [ "$2" = -i ] || { echo "unexpected: docker $*" >&2; exit 99; }
shift 3
exec "$@"
"""
# A line the pull_progress callback prints at a poll: "[localhost] gemma3:270m: pulling … 40% of …"
PROGRESS = re.compile(r"^\s*\[localhost\] (\S+): pulling (\w+) (\d+)% of ", re.MULTILINE)


@pytest.fixture(scope="module")
def simulator() -> Iterator[SimulatorProcess]:
    # A pull long enough for several polls a second apart, however busy the machine.
    with run_simulator(pull_duration=scaled(8), startup_timeout=scaled(15),
                       control_timeout=scaled(5)) as sim:
        yield sim


def play_models(tmp_path: Path, simulator: SimulatorProcess, models: list[str]) -> PlaybookRun:
    shim = tmp_path / "bin"
    shim.mkdir()
    (shim / "docker").write_text(DOCKER_EXEC_HERE)
    (shim / "docker").chmod(0o755)
    playbook = tmp_path / "models.yml"
    playbook.write_text(yaml.safe_dump([{
        "name": "Pull models", "hosts": "localhost", "gather_facts": False,
        "roles": [{"role": "models", "models_list": models, "models_container": "proxy-here",
                   "models_container_python": sys.executable,
                   "models_ollama_url": simulator.url, "models_poll_interval": 1}],
    }]))
    return run_playbook("-i", "localhost,", "-c", "local", "-e",
                        "ansible_python_interpreter=" + sys.executable, playbook, timeout=300,
                        env={"PATH": f"{shim}{os.pathsep}{os.environ['PATH']}"})


def test_each_pull_shows_its_percentage_while_it_runs(tmp_path: Path,
                                                     simulator: SimulatorProcess) -> None:
    simulator.reset(config=False)
    run = play_models(tmp_path, simulator, ["llama3.2", "gemma3:270m"])
    assert run.returncode == 0, run.summary() + run.stderr
    # Printed while the pull ran (at the polls), not only at its end.
    shown = PROGRESS.findall(run.stderr)
    assert {model for model, _, _ in shown} == {"gemma3:270m"}, run.stderr
    # A percentage among them, and a view that moved on from poll to poll.
    polls = re.findall(r"^\s*\[localhost\] gemma3:270m: (.+)$", run.stderr, re.MULTILINE)
    assert shown and len(set(polls)) >= 3, run.stderr
    follow = run.task("Follow, printing its progress at every poll, the pull of gemma3:270m")
    assert (follow.result["finished"], follow.result["rc"]) == (True, 0)
    assert "gemma3:270m: success" in follow.result["output"]
    # Nothing left behind: the job's output file is removed.
    assert not Path(follow.result["invocation"]["module_args"]["path"]).exists()


def test_a_model_the_registry_does_not_have_fails_the_play_naming_it(
        tmp_path: Path, simulator: SimulatorProcess) -> None:
    run = play_models(tmp_path, simulator, ["no-such-model:1b"])
    assert run.returncode != 0
    failure = run.task("Fail when a model could not be pulled")
    assert failure.status == "failed"
    assert failure.result["msg"].startswith("Could not pull no-such-model:1b:")
    assert "pull model manifest: file does not exist" in failure.result["msg"]
