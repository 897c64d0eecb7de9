"""Isolation: Ollama, Redis and Postgres are reachable by the proxy and by nothing else.

Proved three ways, because each alone can lie: the host's listening sockets, Docker's own record
of ports and networks, and real connections from an outside host. The outside host is a network
namespace wired to the host by a veth pair: the host itself can reach container IPs on an
internal bridge, so a connection from the host proves nothing about the network.
"""

from __future__ import annotations

import ipaddress
import json
import random
import secrets
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.hosts import probes
from tests.hosts.target import (
    INTERNAL_NETWORKS,
    MONITORING_PORTS,
    OLLAMA_PORT,
    PRIVATE_PORTS,
    PRIVATE_SERVICE_NETWORKS,
    PUBLISHING_SERVICES,
    StackHost,
    listener_processes,
    tcp_listeners,
)
from tests.support.timing import scaled

LOOPBACK = {"127.0.0.1", "::1"}


@pytest.mark.parametrize("service", sorted(PRIVATE_PORTS))
def test_private_port_has_no_listener_on_any_host_interface(
    host: Any, stack: StackHost, service: str
) -> None:
    port = PRIVATE_PORTS[service]
    # testinfra's spec for 0.0.0.0 also matches a dual-stack `::` socket; `:::P` only `::`.
    assert not host.socket(f"tcp://0.0.0.0:{port}").is_listening, f"{port} on all IPv4"
    assert not host.socket(f"tcp://:::{port}").is_listening, f"{port} on all IPv6"

    addresses = tcp_listeners(host, port)
    owners = listener_processes(host, port) if addresses else ""
    # The stack never publishes these; Docker's userland proxy would show as docker-proxy.
    assert "docker-proxy" not in owners, f"Docker publishes {port} on this host:\n{owners}"
    allowed = LOOPBACK if port in stack.settings.host_loopback_ports else set()
    exposed = [address for address in addresses if address not in allowed]
    assert not exposed, (
        f"something listens on {service}'s port {port} at {exposed}:\n{owners}"
        "(a host-local service that must stay: list the port in LLM_STACK_HOST_LOOPBACK_PORTS)"
    )


def test_the_proxy_port_is_listening(host: Any, stack: StackHost) -> None:
    port = stack.proxy_port
    # With "userland-proxy": false Docker serves published ports by NAT alone and no socket
    # exists; then no docker-proxy runs at all, and the HTTP checks prove the port answers.
    userland_proxy_off = host.run("pgrep -x docker-proxy").rc != 0
    assert tcp_listeners(host, port) or userland_proxy_off, (
        f"the proxy is published on {port} but nothing listens there"
    )


def test_ollama_refuses_connections_on_host_loopback(stack: StackHost) -> None:
    assert stack.tcp_connect("127.0.0.1", OLLAMA_PORT) == "refused"


def test_the_proxy_reaches_ollama_over_the_backend_network(stack: StackHost) -> None:
    answer = stack.exec_python("proxy", probes.HTTP_GET, f"http://ollama:{OLLAMA_PORT}/")

    assert answer == {"status": 200, "body": "Ollama is running"}


@pytest.mark.parametrize("service", sorted(PRIVATE_SERVICE_NETWORKS))
def test_private_service_publishes_nothing_and_joins_only_its_networks(
    stack: StackHost, service: str
) -> None:
    document = stack.inspect(service)

    assert not document["HostConfig"]["PortBindings"], document["HostConfig"]["PortBindings"]
    assert not stack.published_ports(service)
    # Host networking would bypass every rule above.
    assert document["HostConfig"]["NetworkMode"] != "host"
    expected = {stack.network_name(net) for net in PRIVATE_SERVICE_NETWORKS[service]}
    assert set(document["NetworkSettings"]["Networks"]) == expected


def test_only_the_entry_points_publish_ports(stack: StackHost) -> None:
    # Exporters and whatever joins the stack later are scraped or used over internal networks.
    services = stack.services()
    assert services, "no running container of the stack"
    publishing = {
        service: ports
        for service in sorted(set(services) - PUBLISHING_SERVICES)
        if (ports := stack.published_ports(service))
    }
    assert not publishing, f"only {sorted(PUBLISHING_SERVICES)} may publish ports: {publishing}"


@pytest.mark.parametrize("network", INTERNAL_NETWORKS)
def test_network_is_internal(stack: StackHost, network: str) -> None:
    assert stack.inspect_network(network)["Internal"] is True


# --- from an outside host ------------------------------------------------------------------------


class OutsideHost:
    """A network namespace whose only link is a veth pair to the host under test."""

    def __init__(self, stack: StackHost, name: str, host_address: str) -> None:
        self.stack = stack
        self.name = name
        self.host_address = host_address

    def run_probe(self, program: str, *args: object) -> dict[str, Any]:
        command = "ip netns exec %s python3 -c %s" + " %s" * len(args)
        return dict(json.loads(self.stack.check_output(command, self.name, program, *args)))

    def connect(self, address: str, port: int) -> str:
        return str(self.run_probe(probes.TCP_CONNECT, address, port, scaled(3))["result"])


def free_subnet(stack: StackHost) -> ipaddress.IPv4Network:
    """A /30 of TEST-NET-2 (documentation space, never routed) that the host does not use."""
    in_use = stack.check_output("ip -4 -o addr show") + stack.check_output("ip -4 route show")
    candidates = list(ipaddress.ip_network("198.51.100.0/24").subnets(new_prefix=30))
    random.shuffle(candidates)
    for subnet in candidates:
        if not any(str(address) in in_use for address in subnet):
            return subnet
    raise AssertionError("no free /30 in 198.51.100.0/24 for the outside namespace")


@pytest.fixture(scope="module")
def outside_host(stack: StackHost) -> Iterator[OutsideHost]:
    suffix = secrets.token_hex(3)
    name, host_if, outside_if = f"llmout-{suffix}", f"llmh{suffix}", f"llmo{suffix}"
    subnet = free_subnet(stack)
    host_ip, outside_ip = (str(address) for address in list(subnet.hosts())[:2])
    run: Callable[..., str] = stack.check_output
    run("ip netns add %s", name)
    try:
        run("ip link add %s type veth peer name %s netns %s", host_if, outside_if, name)
        run("ip addr add %s dev %s", f"{host_ip}/30", host_if)
        run("ip link set %s up", host_if)
        run("ip netns exec %s ip addr add %s dev %s", name, f"{outside_ip}/30", outside_if)
        run("ip netns exec %s ip link set %s up", name, outside_if)
        run("ip netns exec %s ip link set lo up", name)
        # Everything, container subnets included, is routed through the host, as it would be
        # for a machine on the host's LAN that knows those routes.
        run("ip netns exec %s ip route add default via %s", name, host_ip)
        yield OutsideHost(stack, name, host_ip)
    finally:
        # Deleting the namespace deletes its end of the veth pair, and with it the host's end.
        stack.host.run("ip netns del %s", name)
        stack.host.run("ip link del %s", host_if)


def test_outside_host_reaches_the_proxy(stack: StackHost, outside_host: OutsideHost) -> None:
    url = f"http://{outside_host.host_address}:{stack.proxy_port}/api/llm/status"
    answer = outside_host.run_probe(probes.HTTP_GET, url)

    assert answer["status"] == 200, answer


# The private services' ports, and the monitoring UIs published on loopback only.
HOST_ONLY_PORTS = {**PRIVATE_PORTS, **MONITORING_PORTS}


@pytest.mark.parametrize("service", sorted(HOST_ONLY_PORTS))
def test_outside_host_cannot_reach_the_port_through_the_host(
    outside_host: OutsideHost, service: str
) -> None:
    result = outside_host.connect(outside_host.host_address, HOST_ONLY_PORTS[service])

    assert result in ("refused", "timeout", "unreachable"), result


@pytest.mark.parametrize("service", sorted(PRIVATE_PORTS))
def test_outside_host_cannot_reach_private_container_directly(
    stack: StackHost, outside_host: OutsideHost, service: str
) -> None:
    # Every network the container is on, egress included: a neighbour routing a container
    # subnet via this host must not get through on any of them.
    ips = stack.container_ips(service)
    assert ips, f"{service} has no IP address"
    port = PRIVATE_PORTS[service]
    reached = [
        f"{address} ({network})"
        for network, address in sorted(ips.items())
        if outside_host.connect(address, port) == "open"
    ]
    assert not reached, f"{service} answers on {port} from outside at {reached}"


def test_the_probe_can_tell_an_open_port(stack: StackHost, outside_host: OutsideHost) -> None:
    # Without this, "not open" above could mean the probe never works from the namespace.
    assert outside_host.connect(outside_host.host_address, stack.proxy_port) == "open"
