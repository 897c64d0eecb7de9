"""Redis and Postgres: the proxy's limits/cache and its audit/history database."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pulumi
import pulumi_docker as docker

from infra.confinement import confined, tmpfs, upload_volumes
from infra.network import Networks

# Creates the proxy's own role on the first start (docker-compose.yml mounts the same file).
PROXY_ROLE_SCRIPT = Path(__file__).resolve().parent / "postgres" / "proxy-role.sh"
INITDB_DIR = "/docker-entrypoint-initdb.d"
PROXY_DB_ROLE = "llm_proxy"
# The shell reads the password from the environment, so the command itself holds none.
REDIS_COMMAND = [
    "sh",
    "-c",
    "exec redis-server --save '' --appendonly no --requirepass \"$REDIS_PASSWORD\"",
]


@dataclass
class DatastoresArgs:
    name_prefix: str
    redis_image: str
    postgres_image: str
    networks: Networks
    # The superuser's (administration only) and the proxy role's.
    postgres_password: pulumi.Output[str]
    proxy_db_password: pulumi.Output[str]
    redis_password: pulumi.Output[str]


class Datastores(pulumi.ComponentResource):
    """The `redis` and `postgres` services of docker-compose.yml: unpublished, Redis on its own
    network with the proxy, Postgres on `backend` (and `analytics` for Grafana)."""

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
            **confined(),
            # The image's own user: its entrypoint then needs no root step (chown, su-exec).
            user="redis",
            envs=args.redis_password.apply(lambda password: [f"REDIS_PASSWORD={password}"]),
            # Rate-limit counters and cache only: nothing worth writing to disk.
            command=REDIS_COMMAND,
            networks_advanced=networks.attach("redis", networks.redis),
            healthcheck=docker.ContainerHealthcheckArgs(
                # An unauthenticated `redis-cli ping` prints NOAUTH and still exits 0.
                tests=[
                    "CMD-SHELL",
                    'REDISCLI_AUTH="$REDIS_PASSWORD" redis-cli ping | grep -qx PONG',
                ],
                interval="10s",
                timeout="5s",
                retries=5,
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
            **confined(),
            # The owner of the data volume; the entrypoint then skips its root steps.
            user="postgres",
            tmpfs=tmpfs("/var/run/postgresql", "/tmp"),
            # Built inside apply() so that the whole list stays a secret in Pulumi's state.
            envs=pulumi.Output.all(args.postgres_password, args.proxy_db_password).apply(
                lambda passwords: [
                    "POSTGRES_USER=llm",
                    "POSTGRES_DB=llm",
                    f"POSTGRES_PASSWORD={passwords[0]}",
                    f"PROXY_DB_ROLE={PROXY_DB_ROLE}",
                    f"PROXY_DB_PASSWORD={passwords[1]}",
                ]
            ),
            uploads=[
                docker.ContainerUploadArgs(
                    file=f"{INITDB_DIR}/10-proxy-role.sh",
                    content=PROXY_ROLE_SCRIPT.read_text(encoding="utf-8"),
                    executable=True,
                )
            ],
            volumes=[
                docker.ContainerVolumeArgs(
                    volume_name=self.postgres_volume.name,
                    container_path="/var/lib/postgresql/data",
                ),
                *upload_volumes(INITDB_DIR),
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
