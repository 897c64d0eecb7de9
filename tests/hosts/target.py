"""The deployed stack on one host, as the host suite sees it: settings, containers, probes.

Settings come from pytest options or the environment (options win):

- `--stack-project` / `LLM_STACK_PROJECT` (`llm-stack`): the compose project name (Pulumi's
  `namePrefix`).
- `--stack-proxy-url` / `LLM_STACK_PROXY_URL` (`http://127.0.0.1:<published port>`): the proxy
  as seen from the host.
- `LLM_STACK_JWT_SECRET` (the proxy container's `JWT_SECRET`): the HS256 key test tokens are
  signed with.
- `--stack-model` / `LLM_STACK_MODEL` (the first model the proxy lists): for generation checks.
- `--stack-expect-gpu` / `LLM_STACK_EXPECT_GPU` (`auto`: an NVIDIA GPU on the PCI bus): `yes`,
  `no` or `auto`.
- `--stack-host-loopback-ports` / `LLM_STACK_HOST_LOOPBACK_PORTS` (none): ports the host itself
  serves on loopback, such as CI's own test databases on 5432 and 6379. Allowed there, never on
  another address nor through Docker.

The secret has no command-line option on purpose: command lines are visible to every user.

Containers are found by their compose labels (project + service), or, for the Pulumi program's
containers, by name `<project>-<service>`. Network names are `<project>_<network>` either way.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from tests.hosts import probes
from tests.support.timing import scaled
from tests.support.tokens import make_token

OLLAMA_PORT = 11434
REDIS_PORT = 6379
POSTGRES_PORT = 5432
PRIVATE_PORTS = {"ollama": OLLAMA_PORT, "redis": REDIS_PORT, "postgres": POSTGRES_PORT}
PROMETHEUS_PORT = 9090
ALERTMANAGER_PORT = 9093
GRAFANA_PORT = 3000
# The monitoring UIs, each on 127.0.0.1 unless the operator opts in.
MONITORING_PORTS = {
    "prometheus": PROMETHEUS_PORT,
    "alertmanager": ALERTMANAGER_PORT,
    "grafana": GRAFANA_PORT,
}
PROXY_CONTAINER_PORT = 8000

# The isolation policy of docker-compose.yml: each private service and the networks it may
# join. Ollama's `egress` network exists only so that it can pull models; `analytics` gives
# Grafana read access to the audit tables and nothing else; Redis's own network joins only the
# proxy.
PRIVATE_SERVICE_NETWORKS = {
    "ollama": {"backend", "egress"},
    "redis": {"redis"},
    "postgres": {"backend", "analytics"},
}
# Networks with no route off the host.
INTERNAL_NETWORKS = ("backend", "analytics", "redis", "docker-api")
# The only services that publish ports: the proxy (the entry point), and the monitoring UIs (on
# loopback unless the operator opts in).
PUBLISHING_SERVICES = {"proxy", *MONITORING_PORTS}

OPTIONS = {
    # option dest: (flag, environment variable, default, help)
    "stack_project": ("--stack-project", "LLM_STACK_PROJECT", "llm-stack", "compose project"),
    "stack_proxy_url": ("--stack-proxy-url", "LLM_STACK_PROXY_URL", "", "proxy URL on the host"),
    "stack_model": ("--stack-model", "LLM_STACK_MODEL", "", "model for generation checks"),
    "stack_expect_gpu": ("--stack-expect-gpu", "LLM_STACK_EXPECT_GPU", "auto", "yes|no|auto"),
    "stack_host_loopback_ports": (
        "--stack-host-loopback-ports",
        "LLM_STACK_HOST_LOOPBACK_PORTS",
        "",
        "comma-separated ports the host itself serves on loopback",
    ),
}


def add_options(parser: pytest.Parser) -> None:
    group = parser.getgroup("llm-stack host suite")
    for dest, (flag, env, default, help_text) in OPTIONS.items():
        group.addoption(flag, dest=dest, default=None, help=f"{help_text} [{env}, {default!r}]")


def option(config: pytest.Config, dest: str) -> str:
    flag, env, default, _ = OPTIONS[dest]
    value = config.getoption(dest, default=None)
    return str(value if value is not None else os.environ.get(env, default))


@dataclass(frozen=True)
class StackSettings:
    project: str = "llm-stack"
    proxy_url: str = ""
    jwt_secret: str = ""
    model: str = ""
    expect_gpu: str = "auto"
    host_loopback_ports: frozenset[int] = field(default_factory=frozenset)

    @classmethod
    def from_config(cls, config: pytest.Config) -> StackSettings:
        expect_gpu = option(config, "stack_expect_gpu").lower()
        if expect_gpu not in ("yes", "no", "auto"):
            raise pytest.UsageError(f"--stack-expect-gpu must be yes, no or auto: {expect_gpu!r}")
        ports = option(config, "stack_host_loopback_ports")
        return cls(
            project=option(config, "stack_project"),
            proxy_url=option(config, "stack_proxy_url").rstrip("/"),
            jwt_secret=os.environ.get("LLM_STACK_JWT_SECRET", ""),
            model=option(config, "stack_model"),
            expect_gpu=expect_gpu,
            host_loopback_ports=frozenset(int(p) for p in ports.split(",") if p.strip()),
        )


class StackHost:
    """The stack's containers and networks on one testinfra host, with the probes to use."""

    def __init__(self, host: Any, settings: StackSettings) -> None:
        self.host = host
        self.settings = settings
        self._ids: dict[str, str] = {}

    # --- running things on the host ---------------------------------------------------------------

    def check_output(self, command: str, *args: object) -> str:
        """Run `command` with each `%s` replaced by a shell-quoted arg; fail unless it exits 0."""
        result = self.host.run(command, *(str(arg) for arg in args))
        assert result.rc == 0, (
            f"`{result.command}` failed with status {result.rc}:\n{result.stdout}{result.stderr}"
        )
        return str(result.stdout)

    def python(self, program: str, *args: object) -> dict[str, Any]:
        """Run one of `probes` with the host's python3 and return what it printed."""
        return json.loads(self.check_output("python3 -c %s" + " %s" * len(args), program, *args))

    def tcp_connect(self, address: str, port: int, timeout: float = 3.0) -> str:
        """`timeout` is the budget on an idle machine; the scale factor stretches it."""
        return str(self.python(probes.TCP_CONNECT, address, port, scaled(timeout))["result"])

    # --- docker ----------------------------------------------------------------------------------

    def container(self, service: str) -> str:
        """The id of the service's running container; fails naming the service if none."""
        if service not in self._ids:
            self._ids = self.services()
        assert service in self._ids, (
            f"no running {service!r} container of stack {self.settings.project!r} (is the stack "
            f"up? is --stack-project right?); running: {sorted(self._ids)}"
        )
        return self._ids[service]

    def services(self) -> dict[str, str]:
        """Every running container of the stack: service name -> container id."""
        project = self.settings.project
        output = self.check_output(
            "docker ps --no-trunc --format %s --filter %s",
            '{{.ID}} {{.Label "com.docker.compose.service"}} {{.Names}}',
            f"label=com.docker.compose.project={project}",
        )
        if not output.strip():  # the Pulumi program's containers: <project>-<service>
            output = self.check_output(
                "docker ps --no-trunc --format %s --filter %s",
                "{{.ID}} - {{.Names}}",
                f"name=^/{project}-",
            )
        found: dict[str, str] = {}
        for line in output.splitlines():
            container_id, service, name = line.split()
            service = service if service != "-" else name.removeprefix(f"{project}-")
            # A scaled service has several containers; the checks look at one of them.
            found.setdefault(service, container_id)
        return found

    def inspect(self, service: str) -> dict[str, Any]:
        document = json.loads(self.check_output("docker inspect %s", self.container(service)))
        return dict(document[0])

    def network_name(self, network: str) -> str:
        return f"{self.settings.project}_{network}"

    def inspect_network(self, network: str) -> dict[str, Any]:
        output = self.check_output("docker network inspect %s", self.network_name(network))
        return dict(json.loads(output)[0])

    def container_ips(self, service: str) -> dict[str, str]:
        """Network name -> the container's IPv4 address on it."""
        networks = self.inspect(service)["NetworkSettings"]["Networks"]
        return {name: net["IPAddress"] for name, net in networks.items() if net["IPAddress"]}

    def exec_python(self, service: str, program: str, *args: object) -> dict[str, Any]:
        """Run a probe with python3 inside the service's container."""
        command = "docker exec %s python3 -c %s" + " %s" * len(args)
        return json.loads(self.check_output(command, self.container(service), program, *args))

    def logs(self, service: str) -> str:
        result = self.host.run("docker logs %s", self.container(service))
        assert result.rc == 0, result.stderr
        # Ollama (and the simulator) log to stderr; `docker logs` keeps the two streams apart.
        return str(result.stdout) + str(result.stderr)

    def environment(self, service: str) -> dict[str, str]:
        pairs = (item.partition("=") for item in self.inspect(service)["Config"]["Env"] or [])
        return {key: value for key, _, value in pairs}

    def published_ports(self, service: str) -> dict[str, list[dict[str, str]]]:
        """Container port ("8000/tcp") -> its host bindings, for the ports that have any."""
        ports = self.inspect(service)["NetworkSettings"]["Ports"] or {}
        return {port: list(bindings) for port, bindings in ports.items() if bindings}

    def published(self, service: str, container_port: int) -> list[dict[str, str]]:
        """The host bindings of a container port: [{"HostIp", "HostPort"}, ...]."""
        return self.published_ports(service).get(f"{container_port}/tcp", [])

    # --- the proxy -------------------------------------------------------------------------------

    @property
    def proxy_port(self) -> int:
        """The host port the proxy is published on (read from Docker, not assumed)."""
        bindings = self.published("proxy", PROXY_CONTAINER_PORT)
        assert bindings, "the proxy publishes no port: the stack has no entry point"
        return int(bindings[0]["HostPort"])

    @property
    def proxy_url(self) -> str:
        return self.settings.proxy_url or f"http://127.0.0.1:{self.proxy_port}"

    def mint_token(
        self, sub: str = "host-suite", role: str = "user", ttl: int = 300, secret: str = ""
    ) -> str:
        """An HS256 token signed with the stack's JWT_SECRET (or `secret`), as an IdP would."""
        env = self.environment("proxy")
        secret = secret or self.settings.jwt_secret or env.get("JWT_SECRET", "")
        assert secret, "no JWT secret: set LLM_STACK_JWT_SECRET (the proxy container has none)"
        return make_token(sub, role, ttl, secret, aud=env.get("JWT_AUDIENCE") or None,
                          iss=env.get("JWT_ISSUER") or None)

    def model(self, token: str) -> str:
        """The model generation checks use: the configured one, else the first the proxy lists."""
        if self.settings.model:
            return self.settings.model
        answer = self.python(probes.HTTP_GET, f"{self.proxy_url}/api/llm/models", token)
        assert answer["status"] == 200, answer
        models = json.loads(answer["body"])["models"]
        assert models, "Ollama has no model: pull one (the playbook does) or set LLM_STACK_MODEL"
        return str(models[0]["name"])


def poll(check: Callable[[], Any], deadline_s: float, interval_s: float = 2.0) -> Any:
    """Call `check` until it returns something truthy or the deadline passes; return the last.

    `deadline_s` is the budget on an idle machine; the scale factor stretches it (as
    tests.support.timing.wait_until, which raises where this returns the last value).
    """
    end = time.monotonic() + scaled(deadline_s)
    while True:
        value = check()
        if value or time.monotonic() >= end:
            return value
        time.sleep(interval_s)


def tcp_listeners(host: Any, port: int) -> list[str]:
    """Addresses with a TCP socket listening on `port` (testinfra's listing, IPv4 and IPv6)."""
    found = []
    for spec in host.socket.get_listening_sockets():
        if not spec.startswith("tcp://"):
            continue
        address, _, spec_port = spec.removeprefix("tcp://").rpartition(":")
        if int(spec_port) == port:
            found.append(address)
    return found


def listener_processes(host: Any, port: int) -> str:
    """`ss`'s view of who listens on `port` (process names need root, or testinfra's --sudo)."""
    return str(host.run("ss -Hltnp %s", f"sport = :{port}").stdout)
