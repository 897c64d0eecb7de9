"""The stack's four Docker networks, and how a service joins them."""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_docker as docker


@dataclass
class NetworksArgs:
    name_prefix: str


class Networks(pulumi.ComponentResource):
    """`backend`, `analytics`, `redis` and `docker-api` (internal: no route off the host),
    `frontend` and `egress`.

    Ollama and Postgres live on `backend`, which cannot publish ports. The proxy, Prometheus and
    Grafana publish through `frontend`. `egress` exists only so that Ollama can pull models
    without joining the network whose ports are published. `analytics` joins only Postgres and
    Grafana, so Grafana reads the audit log without reaching anything else; `redis` only Redis
    and the proxy, its one client; `docker-api` only cAdvisor and the read-only Docker API proxy.
    """

    def __init__(
        self, name: str, args: NetworksArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("llm-stack:infra:Networks", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        self.backend = docker.Network(
            "backend", name=f"{args.name_prefix}_backend", internal=True, opts=child
        )
        self.frontend = docker.Network("frontend", name=f"{args.name_prefix}_frontend", opts=child)
        self.egress = docker.Network("egress", name=f"{args.name_prefix}_egress", opts=child)
        self.analytics = docker.Network(
            "analytics", name=f"{args.name_prefix}_analytics", internal=True, opts=child
        )
        self.redis = docker.Network(
            "redis", name=f"{args.name_prefix}_redis", internal=True, opts=child
        )
        self.docker_api = docker.Network(
            "docker-api", name=f"{args.name_prefix}_docker-api", internal=True, opts=child
        )
        self.register_outputs(
            {
                "backend": self.backend.name,
                "frontend": self.frontend.name,
                "egress": self.egress.name,
                "analytics": self.analytics.name,
                "redis": self.redis.name,
                "docker_api": self.docker_api.name,
            }
        )

    def attach(
        self, service: str, *networks: docker.Network
    ) -> list[docker.ContainerNetworksAdvancedArgs]:
        """Join `networks` under the service's name, which is what other services resolve.

        Compose gives every container its service name as a DNS alias; the same alias here lets
        prometheus.yml and the proxy's URLs (`ollama:11434`, `postgres:5432`) work unchanged.
        """
        return [
            docker.ContainerNetworksAdvancedArgs(name=network.name, aliases=[service])
            for network in networks
        ]
