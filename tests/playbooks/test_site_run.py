"""playbooks/site.yml, run for real against this machine, twice, as CI runs it.

`scripts/ansible-run ci` with the CI inventory (ansible_connection=local, Debian's docker.io,
Compose from PyPI, no systemd, no GPU required, the stand-in images of scripts/build-stack-images,
models from the Ollama simulator), then again: the second run must change nothing. The checks
below read the host itself (files, iptables, containers, Ollama's models), never only what
Ansible said, and one proves the firewall from a network namespace acting as an outside host.

The machine is a stack host and an engine host at once (the CI inventory): the proxy routes
across two engines, the stack's own Ollama and the engine project's, which it reaches through the
host's address and published port as it would reach another machine. What this does not prove:
two machines, a network between them, or an engine host's firewall seen by a real proxy host's
address (the namespace stands in for that address).

Teardown leaves the machine as it found it, so tests/stack (same images, its own project) can
run before or after in one pytest session: `compose down -v` (both projects), /opt/llm-stack,
/opt/llm-engine and the CI secrets
removed, the firewall rules taken out, daemon.json restored (dockerd keeps the merged settings
until its next restart), and the Compose plugin the role installed removed.

The real runs are module-scoped: they happen once, on the first test that needs them.
"""

from __future__ import annotations

import json
import math
import os
import secrets
import shutil
import socket
import subprocess
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from proxy.upstream.router import RoutingConfig
from tests.playbooks.ansible_cli import REPO, PlaybookRun, run_playbook
from tests.support.proxy_process import metric_value
from tests.support.timing import scaled, wait_until
from tests.support.tokens import make_token

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1500)]

PROJECT = "llm-stack"
STACK_DIR = Path("/opt/llm-stack")
ENGINE_PROJECT, ENGINE_NAME, ENGINE_PORT = "llm-engine", "engine-2", 11435
ENGINE_DIR = Path("/opt/llm-engine")
CI_STATE_DIR = Path("/var/lib/llm-stack-ci-tests")
DAEMON_JSON = Path("/etc/docker/daemon.json")
FIREWALL_SCRIPT = Path("/usr/local/sbin/llm-stack-firewall")
FIREWALL_CHAIN = "LLM-STACK-FW"
COMPOSE_PLUGIN = Path("/usr/local/lib/docker/cli-plugins/docker-compose")
COMPOSE_VENV = Path("/opt/docker-compose-plugin")
PROXY_PORT = 8000
PROTECTED_PORTS = (11434, 6379, 5432, 9090, 9093, 3000)
# The CI inventory allows 198.51.100.243/32 (TEST-NET-2, RFC 5737); .242 is any other outsider.
OUTSIDE_NET = "198.51.100.240/28"
HOST_SIDE, REFUSED_SOURCE, ALLOWED_SOURCE = "198.51.100.241", "198.51.100.242", "198.51.100.243"
# The stack host's address as an engine host sees it (engine_client_address in the inventory):
# allowed to the engine's port, and to nothing else.
PROXY_HOST_SOURCE = "198.51.100.244"
LOG_DIR = REPO / "test-output" / "playbooks"
ENV = {"LLM_STACK_CI_STATE": str(CI_STATE_DIR)}


def sh(
    *command: str, timeout: float = 120, check: bool = True, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """Run `command`; `timeout` is the budget on an idle machine, stretched by the scale factor."""
    result = subprocess.run(
        command, capture_output=True, text=True, timeout=scaled(timeout), cwd=cwd
    )
    if check and result.returncode != 0:
        raise AssertionError(
            f"`{' '.join(command)}` exited {result.returncode}:\n{result.stdout}{result.stderr}"
        )
    return result


def prepare(script: str, timeout: float) -> None:
    """Run one of the repository's machine-preparing scripts, its output kept in test-output/."""
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    log = LOG_DIR / f"{Path(script).name}.log"
    with log.open("w") as out:
        status = subprocess.run(
            [script], cwd=REPO, stdout=out, stderr=subprocess.STDOUT, timeout=scaled(timeout)
        )
    if status.returncode != 0:
        tail = "\n".join(log.read_text().splitlines()[-30:])
        pytest.fail(
            f"{script} failed ({status.returncode}), so the playbook cannot run here; Docker must"
            f" work on this machine for these tests. Last lines of {log}:\n{tail}",
            pytrace=False,
        )


def foreign_containers() -> list[str]:
    """Running containers that are not this test's stack (a dockerd restart would stop them)."""
    output = sh(
        "docker", "ps", "--format",
        '{{.Names}}\t{{.Label "com.docker.compose.project"}}'
        '\t{{.Label "com.docker.compose.project.working_dir"}}',
    ).stdout  # fmt: skip
    found = []
    for line in output.splitlines():
        name, project, workdir = (line.split("\t") + ["", ""])[:3]
        if not (project == PROJECT and workdir == str(STACK_DIR)):
            found.append(f"{name} (project {project or '-'}, from {workdir or '-'})")
    return found


def port_in_use(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(scaled(0.5))
        return sock.connect_ex(("127.0.0.1", port)) == 0


def tear_down(daemon_json_before: bytes | None, plugin_before: bool, venv_before: bool) -> None:
    """Everything the playbook (and these tests) put on the machine, taken out again."""
    projects = {
        PROJECT: (STACK_DIR, ["docker-compose.yml", "docker-compose.ci.yml",
                              "docker-compose.gpu.yml"]),
        ENGINE_PROJECT: (ENGINE_DIR, ["docker-compose.engine.yml",
                                      "docker-compose.engine.ci.yml"]),
    }  # fmt: skip
    for project, (directory, files) in projects.items():
        if (directory / files[0]).exists():
            args = [arg for name in files if (directory / name).exists() for arg in ("-f", name)]
            subprocess.run(
                ["docker", "compose", "--project-directory", str(directory), "-p", project,
                 *args, "down", "--volumes", "--remove-orphans", "--timeout", "10"],
                cwd=directory, capture_output=True, timeout=scaled(180),
            )  # fmt: skip
        # Anything of the project left (a half-finished run): by label.
        for kind in ("container", "network", "volume"):
            listing = [
                "docker",
                kind,
                "ls",
                "-q",
                "--filter",
                f"label=com.docker.compose.project={project}",
            ]
            if kind == "container":
                listing.insert(3, "-a")
            ids = sh(*listing, check=False).stdout.split()
            if ids:
                sh("docker", kind, "rm", *(["-f"] if kind != "network" else []), *ids,
                   check=False)
        shutil.rmtree(directory, ignore_errors=True)
    shutil.rmtree(CI_STATE_DIR, ignore_errors=True)
    if FIREWALL_SCRIPT.exists():
        sh(str(FIREWALL_SCRIPT), "remove", check=False)
        FIREWALL_SCRIPT.unlink()
    if daemon_json_before is None:
        DAEMON_JSON.unlink(missing_ok=True)
    else:
        DAEMON_JSON.write_bytes(daemon_json_before)
    for backup in DAEMON_JSON.parent.glob(f"{DAEMON_JSON.name}.*~"):
        backup.unlink()
    if not plugin_before:
        COMPOSE_PLUGIN.unlink(missing_ok=True)
    if not venv_before:
        shutil.rmtree(COMPOSE_VENV, ignore_errors=True)


@dataclass
class Deployment:
    first: PlaybookRun
    second: PlaybookRun
    daemon_json_seeded: dict[str, Any]


# A key the operator set before the playbook ran; the docker role must merge around it.
OPERATOR_DAEMON_KEY = {"max-concurrent-downloads": 3}
# The keys the docker role merges into daemon.json (docker_daemon_options).
ROLE_DAEMON_KEYS = ("log-driver", "log-opts", "default-address-pools")


@pytest.fixture(scope="module")
def deployment() -> Iterator[Deployment]:
    # LLM_STACK_SKIP_PREPARE=1 (as for scripts/ansible-run ci) reuses the engine and images as
    # they are, for quick iterations; CI never sets it.
    if os.environ.get("LLM_STACK_SKIP_PREPARE") != "1":
        prepare("scripts/docker-engine", timeout=600)
        prepare("scripts/build-stack-images", timeout=1200)
    elif sh("docker", "info", check=False).returncode != 0:
        pytest.fail("LLM_STACK_SKIP_PREPARE=1 but Docker does not answer", pytrace=False)
    daemon_json_before = DAEMON_JSON.read_bytes() if DAEMON_JSON.exists() else None
    plugin_before, venv_before = COMPOSE_PLUGIN.exists(), COMPOSE_VENV.exists()
    tear_down(daemon_json_before, plugin_before, venv_before)  # what a killed run left behind
    others = foreign_containers()
    if others:
        pytest.fail(
            "other containers are running; the playbook's first run restarts dockerd (it merges"
            f" keys into daemon.json), which would stop them: {others}",
            pytrace=False,
        )
    needed = (PROXY_PORT, 9090, 9093, 3000, 11434, ENGINE_PORT)
    busy = [port for port in needed if port_in_use(port)]
    if busy:
        pytest.fail(f"ports the stack or the firewall check need are in use: {busy}", pytrace=False)

    # Without the keys the role merges, whatever an earlier (killed) run left: the first run
    # must have something to merge, and so restart dockerd.
    before = {k: v for k, v in json.loads(daemon_json_before or b"{}").items()
              if k not in ROLE_DAEMON_KEYS}
    seeded = {**before, **OPERATOR_DAEMON_KEY}
    DAEMON_JSON.parent.mkdir(parents=True, exist_ok=True)
    DAEMON_JSON.write_text(json.dumps(seeded, indent=4) + "\n")
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    try:
        env = {**ENV, "LLM_STACK_SKIP_PREPARE": "1"}
        first = run_playbook("ci", via_script=True, env=env, timeout=900)
        (LOG_DIR / "first-run.txt").write_text(first.summary())
        if first.returncode != 0:
            pytest.fail(f"the first run failed:\n{first.summary()}", pytrace=False)
        second = run_playbook("ci", via_script=True, env=env, timeout=900)
        (LOG_DIR / "second-run.txt").write_text(second.summary())
        yield Deployment(first, second, seeded)
    finally:
        tear_down(daemon_json_before, plugin_before, venv_before)


def test_the_first_run_provisions_the_host(deployment: Deployment) -> None:
    first = deployment.first
    stats = first.stats["localhost"]

    assert first.returncode == 0 and stats["failures"] == 0, first.summary()
    assert stats["changed"] > 0
    print(f"first run: {first.wall_s:.0f} s\n{first.summary()}")


def test_the_second_run_changes_nothing(deployment: Deployment) -> None:
    second = deployment.second

    assert second.returncode == 0, second.summary()
    assert second.stats["localhost"]["changed"] == 0, (
        f"the second run changed: {second.changed_tasks()}\n{second.summary()}"
    )
    print(f"second run: {second.wall_s:.0f} s")


def test_a_dry_run_on_the_provisioned_host_plans_no_change(deployment: Deployment) -> None:
    run = run_playbook(
        "ci", "--check", "--diff", via_script=True, env={**ENV, "LLM_STACK_SKIP_PREPARE": "1"}
    )

    assert run.returncode == 0, run.summary()
    assert run.stats["localhost"]["changed"] == 0, (
        f"check mode would change: {run.changed_tasks()}\n{run.summary()}"
    )


def test_docker_merged_its_keys_into_the_operators_daemon_json(deployment: Deployment) -> None:
    config = json.loads(DAEMON_JSON.read_text())

    assert config["max-concurrent-downloads"] == 3, "the operator's key was lost"
    assert config["log-opts"] == {"max-size": "10m", "max-file": "3"}
    assert config["default-address-pools"] == [{"base": "172.16.0.0/12", "size": 24}]
    # The change was applied: dockerd was restarted (no systemd: the CI restart command).
    restart = deployment.first.task("Restart dockerd with docker_restart_command")
    assert restart.status == "changed"
    assert sh("docker", "compose", "version", "--short").stdout.strip().startswith("2.")
    assert COMPOSE_PLUGIN.exists(), "the pip source did not install the plugin"


def test_the_deployed_compose_file_is_the_repositorys_byte_for_byte(deployment: Deployment) -> None:
    assert (STACK_DIR / "docker-compose.yml").read_bytes() == (
        REPO / "docker-compose.yml"
    ).read_bytes()
    assert (STACK_DIR / "docker-compose.ci.yml").read_bytes() == (
        REPO / "tests" / "stack" / "docker-compose.ci.yml"
    ).read_bytes()
    # No GPU here: no GPU override.
    assert not (STACK_DIR / "docker-compose.gpu.yml").exists()
    # The engine's definition, which both projects extend, and the engine project's own file.
    for directory, name in ((STACK_DIR, "infra/ollama.yml"), (ENGINE_DIR, "infra/ollama.yml"),
                            (ENGINE_DIR, "docker-compose.engine.yml")):
        assert (directory / name).read_bytes() == (REPO / name).read_bytes(), directory / name
    assert (STACK_DIR / "dashboards" / "prometheus" / "prometheus.yml").read_bytes() == (
        REPO / "dashboards" / "prometheus" / "prometheus.yml"
    ).read_bytes()


def env_file(directory: Path) -> dict[str, str]:
    return dict(
        line.split("=", 1)
        for line in (directory / ".env").read_text().splitlines()
        if "=" in line and not line.startswith("#")
    )


def test_the_env_file_holds_the_secrets_readable_by_root_only(deployment: Deployment) -> None:
    mode = (STACK_DIR / ".env").stat().st_mode & 0o777
    values = env_file(STACK_DIR)

    assert mode == 0o600 and (STACK_DIR / ".env").stat().st_uid == 0
    for key in ("JWT_SECRET", "POSTGRES_PASSWORD", "PROXY_METRICS_TOKEN", "GRAFANA_ADMIN_PASSWORD"):
        assert len(values[key]) >= 32, key
    assert values["JWT_SECRET"] == (CI_STATE_DIR / "jwt_secret").read_text().strip()


def test_the_stack_is_up_healthy_and_answers(deployment: Deployment) -> None:
    records = [
        json.loads(line)
        for line in sh(
            "docker", "compose", "--project-directory", str(STACK_DIR),
            "-f", "docker-compose.yml", "-f", "docker-compose.ci.yml", "ps", "--format", "json",
            cwd=STACK_DIR,
        ).stdout.splitlines()
        if line.strip()
    ]  # fmt: skip
    unhealthy = {r["Service"]: r["Health"] for r in records if r["Health"] not in ("healthy", "")}

    assert records and not unhealthy, unhealthy
    assert {r["Project"] for r in records} == {PROJECT}
    with urllib.request.urlopen(
        f"http://127.0.0.1:{PROXY_PORT}/api/llm/status", timeout=scaled(10)
    ) as answer:
        assert answer.status == 200
        assert json.load(answer)


def proxy_get(path: str, token: str) -> Any:
    request = urllib.request.Request(f"http://127.0.0.1:{PROXY_PORT}{path}",
                                     headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(request, timeout=scaled(30)) as answer:
        body = answer.read().decode()
    return json.loads(body) if path.startswith("/api/") else body


def test_the_proxy_routes_across_both_engines(deployment: Deployment) -> None:
    dotenv = env_file(STACK_DIR)
    routing = RoutingConfig.parse("PROXY_UPSTREAMS", dotenv["PROXY_UPSTREAMS"])
    assert [(u.name, u.url) for u in routing.upstreams] == [
        ("local", "http://ollama:11434"), (ENGINE_NAME, engine_url())]
    assert (ENGINE_DIR / ".env").stat().st_mode & 0o777 == 0o600
    assert f"ENGINE_PORT={ENGINE_PORT}" in (ENGINE_DIR / ".env").read_text().splitlines()
    secret = dotenv["JWT_SECRET"]

    status = proxy_get("/api/llm/status", make_token("ops", "admin", secret=secret))
    states = {u["name"]: u["healthy"] for u in status["details"]["upstreams"]}
    assert states == {"local": True, ENGINE_NAME: True}, status

    # Twenty users (the rate limit is per user), one request each: with equal weights, one
    # engine getting none of them has a chance of 2 in 2^20.
    for number in range(20):
        request = urllib.request.Request(
            f"http://127.0.0.1:{PROXY_PORT}/api/llm/generate",
            data=json.dumps({"model": "llama3.2", "prompt": f"hello {number}",
                             "stream": False}).encode(),
            headers={"Authorization": f"Bearer {make_token(f'user-{number}', secret=secret)}",
                     "Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=scaled(30)) as answer:
            assert answer.status == 200 and json.load(answer)["response"]
    metrics = proxy_get("/metrics", dotenv["PROXY_METRICS_TOKEN"])
    served = {name: metric_value(metrics, "llm_proxy_upstream_requests_total", upstream=name)
              for name in states}
    assert sum(served.values()) >= 20 and min(served.values()) > 0, served


def ollama_models(url: str = "http://ollama:11434") -> list[str]:
    """The models of the Ollama at `url`, as the proxy container reaches it."""
    program = (
        "import json, sys, urllib.request;"
        "print(json.dumps([m['name'] for m in json.load(urllib.request.urlopen("
        "sys.argv[1] + '/api/tags'))['models']]))"
    )
    output = sh(
        "docker", "exec", f"{PROJECT}-proxy-1", "/opt/venv/bin/python", "-c", program, url
    ).stdout
    return sorted(json.loads(output))


def engine_url() -> str:
    """The engine host's Ollama as the stack's proxy reaches it (from the deployed routing)."""
    routing = json.loads(env_file(STACK_DIR)["PROXY_UPSTREAMS"])
    return next(u["url"] for u in routing["upstreams"] if u["name"] == ENGINE_NAME)


@pytest.mark.parametrize(("play", "url"), [
    ("Pull the models into Ollama", None),
    ("Pull the models into the engine hosts' Ollama", "engine"),
])
def test_the_missing_model_was_pulled_once_and_the_rest_skipped(
    deployment: Deployment, play: str, url: str | None
) -> None:
    assert "gemma3:270m" in ollama_models(*([engine_url()] if url else []))
    follow = "Follow, printing its progress at every poll, the pull of "
    pulls = [t for t in deployment.first.tasks() if f" : {follow}" in t.name and t.play == play]
    assert [(p.name.split(follow)[1], p.result["rc"]) for p in pulls] == [("gemma3:270m", 0)]
    assert "gemma3:270m: success" in pulls[0].result["output"]
    task = "Pull each missing model through Ollama's API"
    assert deployment.second.task(task, play=play).status == "skipped"


def test_a_model_the_registry_does_not_have_fails_the_play_naming_it(
    deployment: Deployment,
) -> None:
    run = run_playbook(
        "ci", "--tags", "models",
        "-e", json.dumps({"models_list": ["llama3.2", "no-such-model:1b"]}),
        via_script=True, env={**ENV, "LLM_STACK_SKIP_PREPARE": "1"}, timeout=300,
    )  # fmt: skip

    assert run.returncode != 0, run.summary()
    failure = run.task("Fail when a model could not be pulled")
    assert failure.status == "failed"
    assert failure.result["msg"].startswith("Could not pull no-such-model:1b:")
    assert "pull model manifest: file does not exist" in failure.result["msg"]
    assert "no-such-model:1b" not in ollama_models()


def test_the_verify_role_ran_the_host_suite_and_it_passed(deployment: Deployment) -> None:
    for run in (deployment.first, deployment.second):
        result = run.task("Run the testinfra host suite against the host").result
        assert result["rc"] == 0, result.get("stdout")
        assert " passed" in result["stdout_lines"][-1], result["stdout_lines"][-5:]
        assert "--hosts=local://" in result["cmd"]


def iptables_rules(chain: str) -> list[str]:
    # -w: how long to wait for the xtables lock (whole seconds), should dockerd hold it.
    lock_wait = str(math.ceil(scaled(10)))
    return sh("iptables", "-w", lock_wait, "-S", chain).stdout.splitlines()


def test_docker_user_jumps_first_to_the_stacks_rules(deployment: Deployment) -> None:
    docker_user = iptables_rules("DOCKER-USER")
    rules = iptables_rules(FIREWALL_CHAIN)

    assert docker_user[1] == f"-A DOCKER-USER -j {FIREWALL_CHAIN}", docker_user
    assert rules[1:] == [
        f"-A {FIREWALL_CHAIN} -i docker0 -j RETURN",
        f"-A {FIREWALL_CHAIN} -i br-+ -j RETURN",
        f"-A {FIREWALL_CHAIN} -s {ALLOWED_SOURCE}/32 -j RETURN",
        f"-A {FIREWALL_CHAIN} -s {PROXY_HOST_SOURCE}/32 -p tcp -m conntrack"
        f" --ctorigdstport {ENGINE_PORT} --ctdir ORIGINAL -j RETURN",
        *(
            f"-A {FIREWALL_CHAIN} -p tcp -m conntrack --ctorigdstport {port}"
            " --ctdir ORIGINAL -j DROP"
            for port in (*PROTECTED_PORTS, ENGINE_PORT)
        ),
    ], rules
    assert sh(str(FIREWALL_SCRIPT), "check").stdout.strip() == "in place"


@pytest.fixture
def outside_host(deployment: Deployment) -> Iterator[str]:
    """A network namespace wired to the host by a veth pair: a machine on the host's LAN."""
    suffix = secrets.token_hex(3)
    namespace, host_if, outside_if = f"llmfw-{suffix}", f"llmfwh{suffix}", f"llmfwo{suffix}"
    sh("ip", "netns", "add", namespace)
    try:
        sh(
            "ip",
            "link",
            "add",
            host_if,
            "type",
            "veth",
            "peer",
            "name",
            outside_if,
            "netns",
            namespace,
        )
        sh("ip", "addr", "add", f"{HOST_SIDE}/28", "dev", host_if)
        sh("ip", "link", "set", host_if, "up")
        for address in (REFUSED_SOURCE, ALLOWED_SOURCE, PROXY_HOST_SOURCE):
            sh(
                "ip",
                "netns",
                "exec",
                namespace,
                "ip",
                "addr",
                "add",
                f"{address}/28",
                "dev",
                outside_if,
            )
        sh("ip", "netns", "exec", namespace, "ip", "link", "set", outside_if, "up")
        sh("ip", "netns", "exec", namespace, "ip", "link", "set", "lo", "up")
        sh("ip", "netns", "exec", namespace, "ip", "route", "add", "default", "via", HOST_SIDE)
        yield namespace
    finally:
        sh("ip", "netns", "del", namespace, check=False)
        sh("ip", "link", "del", host_if, check=False)


@pytest.fixture
def published_everywhere(deployment: Deployment) -> Iterator[None]:
    """A throwaway web server published on 0.0.0.0 twice: on Ollama's port and on a free one.

    The stack itself publishes no protected port on a public address, so without this there is
    nothing for the rule to drop. Both host ports lead to the same container port: only the port
    the client dialled (conntrack's original destination) tells them apart.
    """
    name = f"llmfw-probe-{secrets.token_hex(3)}"
    sh(
        "docker", "run", "-d", "--rm", "--name", name,
        "-p", "0.0.0.0:11434:8080", "-p", "0.0.0.0:18434:8080",
        "llm-stack-ci/base:bookworm", "python3", "-m", "http.server", "8080",
    )  # fmt: skip
    try:
        wait_until(lambda: port_in_use(18434), timeout=30, interval=0.5)
        yield
    finally:
        sh("docker", "rm", "-f", name, check=False)


def connect_from(namespace: str, source: str, port: int) -> str:
    """open / timeout / refused, for a TCP connection from `source` in the namespace to the host.

    The connect budget is scaled: on a slow machine a dropped connection takes longer to show
    as "timeout", rather than a slow "open" showing as "timeout" too.
    """
    program = (
        "import socket, sys\n"
        "s = socket.socket(); s.settimeout(float(sys.argv[4])); s.bind((sys.argv[1], 0))\n"
        "try:\n    s.connect((sys.argv[2], int(sys.argv[3]))); print('open')\n"
        "except socket.timeout:\n    print('timeout')\n"
        "except ConnectionRefusedError:\n    print('refused')\n"
    )
    python = os.path.realpath(shutil.which("python3") or "/usr/bin/python3")
    args = (source, HOST_SIDE, str(port), str(scaled(3)))
    return sh("ip", "netns", "exec", namespace, python, "-c", program, *args).stdout.strip()


def test_an_outside_host_is_dropped_on_a_protected_port_unless_allowed(
    outside_host: str, published_everywhere: None
) -> None:
    # The path works at all: an unprotected port published the same way is reachable.
    assert connect_from(outside_host, REFUSED_SOURCE, 18434) == "open"
    # Ollama's port, published on 0.0.0.0 all the same, is dropped in DOCKER-USER...
    assert connect_from(outside_host, REFUSED_SOURCE, 11434) == "timeout"
    # ...except for the allowed source.
    assert connect_from(outside_host, ALLOWED_SOURCE, 11434) == "open"


def test_only_the_proxy_host_reaches_the_engine_port(
    outside_host: str, published_everywhere: None
) -> None:
    # The engine project publishes Ollama on 0.0.0.0:11435 for the stack hosts' proxies.
    assert connect_from(outside_host, PROXY_HOST_SOURCE, ENGINE_PORT) == "open"
    assert connect_from(outside_host, REFUSED_SOURCE, ENGINE_PORT) == "timeout"
    # The proxy host is let through to the engine's port only, not to the other protected ones.
    assert connect_from(outside_host, PROXY_HOST_SOURCE, 11434) == "timeout"
