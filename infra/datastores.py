"""Redis and Postgres: the proxy's limits/cache and its audit/history database."""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_docker as docker

from infra.network import Networks


@dataclass
class DatastoresArgs:
    name_prefix: str
    redis_image: str
    postgres_image: str
    networks: Networks
    postgres_password: pulumi.Output[str]


class Datastores(pulumi.ComponentResource):
    """The `redis` and `postgres` services of docker-compose.yml, on `backend` only, unpublished."""

    def __init__(
        self, name: str, args: DatastoresArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("llm-stack:infra:Datastores", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        networks = args.networks

        redis_image = docker.RemoteImage(
            "redis", name=args.redis_image, keep_locally=True, opts=child
        )
        self.redis = docker.Container(
            "redis",
            name=f"{args.name_prefix}-redis",
            image=redis_image.image_id,
            restart="unless-stopped",
            # Rate-limit counters and cache only: nothing worth writing to disk.
            command=["redis-server", "--save", "", "--appendonly", "no"],
            networks_advanced=networks.attach("redis", networks.backend),
            healthcheck=docker.ContainerHealthcheckArgs(
                tests=["CMD", "redis-cli", "ping"], interval="10s", timeout="5s", retries=5
            ),
            wait=True,
            wait_timeout=120,
            opts=child,
        )

        postgres_image = docker.RemoteImage(
            "postgres", name=args.postgres_image, keep_locally=True, opts=child
        )
        self.postgres_volume = docker.Volume(
            "postgres-data", name=f"{args.name_prefix}_postgres-data", opts=child
        )
        self.postgres = docker.Container(
            "postgres",
            name=f"{args.name_prefix}-postgres",
            image=postgres_image.image_id,
            restart="unless-stopped",
            # Built inside apply() so that the whole list stays a secret in Pulumi's state.
            envs=args.postgres_password.apply(
                lambda password: [
                    "POSTGRES_USER=llm",
                    "POSTGRES_DB=llm",
                    f"POSTGRES_PASSWORD={password}",
                ]
            ),
            volumes=[
                docker.ContainerVolumeArgs(
                    volume_name=self.postgres_volume.name,
                    container_path="/var/lib/postgresql/data",
                )
            ],
            # `analytics`: Grafana's read-only view of the audit log, and nothing else.
            networks_advanced=networks.attach("postgres", networks.backend, networks.analytics),
            healthcheck=docker.ContainerHealthcheckArgs(
                tests=["CMD", "pg_isready", "-U", "llm", "-d", "llm"],
                interval="10s",
                timeout="5s",
                retries=5,
                start_period="10s",
            ),
            wait=True,
            wait_timeout=120,
            opts=child,
        )
        self.register_outputs(
            {
                "redis": self.redis.name,
                "postgres": self.postgres.name,
                "postgres_volume": self.postgres_volume.name,
            }
        )
