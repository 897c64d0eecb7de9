"""The compose stack on this machine, up once for the session, for the end-to-end run.

`local_stack` does what an operator's first deployment does, with CI's stand-in images:
scripts/docker-engine (Debian's Docker Engine and the Compose plugin, dockerd started if needed),
scripts/build-stack-images (every image built locally: no registry is reachable), then
`docker compose -f docker-compose.yml -f tests/stack/docker-compose.ci.yml up -d --wait` with
fresh random secrets in a temporary env file. At the end of the session `down -v
--remove-orphans` removes containers, networks and volumes, and the teardown checks that nothing
is left.

The host suite (tests/hosts) then runs against it through testinfra's local backend. If Docker
cannot be started or the stack does not come up, every test here fails with the reason and the
log to read; nothing is skipped.

Logs of each step are kept in test-output/stack/.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import testinfra

from tests.hosts.target import POSTGRES_PORT, REDIS_PORT, StackHost, StackSettings
from tests.support.timing import scaled

REPO = Path(__file__).resolve().parents[2]
LOG_DIR = REPO / "test-output" / "stack"
# Not the production name (`llm-stack`), so a developer's own stack on this machine is untouched.
PROJECT = "llm-stack-e2e"
COMPOSE_FILES = ("docker-compose.yml", "tests/stack/docker-compose.ci.yml")
CI_IMAGE_PREFIX = "llm-stack-ci/"
# The whole bring-up on a cold machine: engine install, debootstrap, image builds, healthchecks.
# Budgets on an idle machine: run_logged stretches them by the scale factor.
ENGINE_TIMEOUT_S = 300
BUILD_TIMEOUT_S = 900
UP_TIMEOUT_S = 300

Progress = Callable[[str], None]


class StackError(Exception):
    """A bring-up step failed; the message says which and ends with its log's tail."""

    def __init__(self, message: str, reason: str = "") -> None:
        super().__init__(message)
        self.reason = reason or message.splitlines()[0]


def run_logged(
    command: list[str],
    log_name: str,
    progress: Progress,
    timeout_s: float,
    env: dict[str, str] | None = None,
) -> str:
    """Run `command` from the repository root, its output into test-output/stack/<log_name>.

    The scripts' own progress lines (`docker-engine: …`, `build-stack-images: …`) are echoed,
    so a long cold start is visibly moving, then one line with the step's time. A command still
    running after `timeout_s` (the budget on an idle machine, stretched by the scale factor) is
    killed. Returns the output.
    """
    timeout_s = scaled(timeout_s)
    start = time.monotonic()
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    log_path = LOG_DIR / log_name
    lines: list[str] = []
    with log_path.open("w") as log:
        process = subprocess.Popen(
            command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        # Reading the output blocks until the command ends, so the deadline needs a timer.
        deadline = threading.Timer(timeout_s, process.kill)
        deadline.start()
        try:
            assert process.stdout is not None
            for line in process.stdout:
                log.write(line)
                log.flush()
                lines.append(line.rstrip())
                if line.startswith(("docker-engine:", "build-stack-images:")):
                    progress(line.rstrip())
            status = process.wait()
        finally:
            deadline.cancel()
    if status != 0:
        why = f"killed after {timeout_s:.0f} s" if status == -9 else f"exit status {status}"
        tail = "\n".join(lines[-40:])
        last = next((line for line in reversed(lines) if line.strip()), why)
        raise StackError(f"`{' '.join(command)}` failed ({why}); see {log_path}:\n{tail}", last)
    progress(f"{log_name.removesuffix('.log')}: done in {time.monotonic() - start:.0f} s")
    return "\n".join(lines)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("0.0.0.0", 0))
        return int(sock.getsockname()[1])


@dataclass
class LocalStack:
    project: str
    env_file: Path
    jwt_secret: str
    proxy_port: int
    progress: Progress

    def compose_command(self, *args: str, files: tuple[str, ...] = COMPOSE_FILES) -> list[str]:
        file_args = [arg for name in files for arg in ("-f", str(REPO / name))]
        return [
            "docker",
            "compose",
            "--project-name",
            self.project,
            "--project-directory",
            str(REPO),
            "--env-file",
            str(self.env_file),
            *file_args,
            *args,
        ]

    @staticmethod
    def compose_env(overrides: Mapping[str, str] | None = None) -> dict[str, str]:
        # Only the env file may set the stack's variables: a JWT_SECRET or PROXY_PORT exported in
        # the developer's shell (or by another test) would otherwise win over it. `overrides`
        # win over the env file in turn, as a shell's variables do: a test's own setting.
        keep = ("PATH", "HOME", "DOCKER_HOST", "DOCKER_CONFIG", "DOCKER_CONTEXT")
        return {**{key: os.environ[key] for key in keep if key in os.environ}, **(overrides or {})}

    def compose(
        self,
        *args: str,
        log_name: str,
        timeout_s: float = 120,
        overrides: Mapping[str, str] | None = None,
    ) -> str:
        return run_logged(
            self.compose_command(*args), log_name, self.progress, timeout_s,
            self.compose_env(overrides),
        )  # fmt: skip

    def compose_quiet(
        self, *args: str, files: tuple[str, ...] = COMPOSE_FILES
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            self.compose_command(*args, files=files),
            cwd=REPO,
            env=self.compose_env(),
            capture_output=True,
            text=True,
            timeout=scaled(120),
        )

    def services(self) -> dict[str, dict[str, Any]]:
        """`compose ps --all` as {service: its record}; compose prints one JSON object a line."""
        output = self.compose_quiet("ps", "--all", "--format", "json").stdout
        records = [json.loads(line) for line in output.splitlines() if line.strip()]
        return {record["Service"]: record for record in records}

    def images(self, files: tuple[str, ...] = COMPOSE_FILES) -> dict[str, str]:
        """Service -> the image it runs, as compose renders `files`."""
        result = self.compose_quiet("config", "--format", "json", files=files)
        if result.returncode != 0:
            raise StackError(f"`docker compose config` fails:\n{result.stderr}", result.stderr)
        services = json.loads(result.stdout)["services"]
        return {name: service.get("image", "") for name, service in services.items()}

    def check_ci_images(self) -> None:
        """Every service of docker-compose.yml runs a CI image: nothing may need a registry."""
        production = self.images(files=COMPOSE_FILES[:1])
        ci = self.images()
        missing = sorted(s for s in production if not ci[s].startswith(CI_IMAGE_PREFIX))
        extra = sorted(set(ci) - set(production))
        if missing or extra:
            raise StackError(
                f"{COMPOSE_FILES[1]} is out of step with {COMPOSE_FILES[0]}: services without "
                f"a CI image {missing}, services only in the override {extra}. Add (or drop) "
                "the image line, with a stand-in under tests/stack/images/ if it is new."
            )

    def diagnostics(self) -> str:
        """`compose ps` and the last log lines of every service: why the stack is not up."""
        parts = [self.compose_quiet("ps", "--all").stdout]
        for service in self.images():
            logs = self.compose_quiet("logs", "--no-color", "--tail", "30", service)
            parts.append(f"--- {service}\n{logs.stdout}{logs.stderr}")
        return "\n".join(parts)

    def down(self) -> None:
        self.compose(
            "down", "--volumes", "--remove-orphans", "--timeout", "10", log_name="down.log"
        )

    def leftovers(self) -> list[str]:
        label = f"label=com.docker.compose.project={self.project}"
        found = []
        for kind in ("container ls --all", "network ls", "volume ls"):
            result = subprocess.run(
                ["docker", *kind.split(), "--quiet", "--filter", label],
                capture_output=True,
                text=True,
                timeout=scaled(60),
            )
            found += [f"{kind.split()[0]} {item}" for item in result.stdout.split()]
        return found


def write_env_file(path: Path, proxy_port: int) -> dict[str, str]:
    values = {
        "JWT_SECRET": secrets.token_hex(32),
        "POSTGRES_PASSWORD": secrets.token_hex(24),
        "PROXY_METRICS_TOKEN": secrets.token_hex(32),
        "GRAFANA_ADMIN_PASSWORD": secrets.token_hex(16),
        "PROXY_DB_PASSWORD": secrets.token_hex(24),
        "REDIS_PASSWORD": secrets.token_hex(24),
        "GRAFANA_SECRET_KEY": secrets.token_hex(32),
        "PROXY_PORT": str(proxy_port),
    }
    path.write_text("".join(f"{key}={value}\n" for key, value in values.items()))
    path.chmod(0o600)
    return values


def progress_writer(config: pytest.Config) -> Progress:
    """Print a line on the terminal now, even while pytest captures the test's output."""
    capture = config.pluginmanager.getplugin("capturemanager")
    reporter = config.pluginmanager.getplugin("terminalreporter")

    def write(line: str) -> None:
        if reporter is None or capture is None:
            return
        with capture.global_and_fixture_disabled():
            reporter.write_line(f"[stack] {line}")

    return write


def provision(stack: LocalStack) -> tuple[str, str] | None:
    """Bring the stack up; None when it is healthy, else (why in a line, the whole story)."""
    try:
        run_logged(["scripts/docker-engine"], "docker-engine.log", stack.progress, ENGINE_TIMEOUT_S)
        stack.check_ci_images()
        run_logged(["scripts/build-stack-images"], "build.log", stack.progress, BUILD_TIMEOUT_S)
        # A run that was killed leaves its stack behind; start from nothing.
        stack.down()
    except StackError as exc:
        return f"cannot provision the local stack: {exc.reason}", str(exc)
    try:
        stack.compose(
            "up", "--detach", "--wait", "--no-build", "--pull", "never",
            log_name="up.log", timeout_s=UP_TIMEOUT_S,
        )  # fmt: skip
    except StackError as exc:
        report = stack.diagnostics()
        stack.down()
        return f"the stack did not come up healthy: {exc.reason}", f"{exc}\n{report}"
    return None


@pytest.fixture(scope="session")
def local_stack(
    pytestconfig: pytest.Config, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LocalStack]:
    progress = progress_writer(pytestconfig)
    env_file = tmp_path_factory.mktemp("stack") / "stack.env"
    port = free_port()
    values = write_env_file(env_file, port)
    stack = LocalStack(PROJECT, env_file, values["JWT_SECRET"], port, progress)
    report = LOG_DIR / "failure.txt"
    report.unlink(missing_ok=True)
    problem = provision(stack)
    if problem:
        # Every test here reports this failure again: the whole story once, on the terminal and
        # in a file, and a line saying why for each test.
        headline, story = problem
        report.write_text(f"{headline}\n\n{story}\n")
        for line in story.splitlines():
            progress(line)
        pytest.fail(f"{headline}\n(the whole report is above and in {report})", pytrace=False)
    try:
        yield stack
    finally:
        stack.down()
        left = stack.leftovers()
        assert not left, f"`compose down` left these behind: {left}"


@pytest.fixture(scope="module")
def host() -> Any:
    """This machine, whatever --hosts says: the local stack is what these tests provisioned."""
    return testinfra.get_host("local://")


@pytest.fixture(scope="session")
def stack_settings(local_stack: LocalStack) -> StackSettings:
    return StackSettings(
        project=local_stack.project,
        jwt_secret=local_stack.jwt_secret,
        # CI runs its own test Postgres and Redis on loopback (scripts/services); they are not
        # the stack's. Any listener on another address, or one owned by Docker, still fails.
        host_loopback_ports=frozenset({POSTGRES_PORT, REDIS_PORT}),
    )


@pytest.fixture(scope="module")
def stack(host: Any, stack_settings: StackSettings) -> StackHost:
    return StackHost(host, stack_settings)
