"""The LLM proxy: built from proxy/Dockerfile, the stack's one public entry point."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import pulumi
import pulumi_docker as docker

from infra.config import Secrets
from infra.confinement import confined, tmpfs
from infra.datastores import PROXY_DB_ROLE
from infra.network import Networks

REPO_ROOT = Path(__file__).resolve().parent.parent
CONTAINER_PORT = 8000
SPOOL_DIR = "/var/lib/llm-proxy"


@dataclass
class ProxyArgs:
    name_prefix: str
    image_name: str
    base_image: str
    networks: Networks
    publish_address: str
    publish_port: int
    jwt_audience: str
    jwt_issuer: str
    trusted_proxies: str
    audit_retention_days: int
    secrets: Secrets
    # Created (and healthy, through their `wait`) before the proxy starts.
    depends_on: list[pulumi.Resource]


class Proxy(pulumi.ComponentResource):
    """The `proxy` service of docker-compose.yml."""

    def __init__(
        self, name: str, args: ProxyArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("llm-stack:infra:Proxy", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        # Relative to where `pulumi` runs (the repository root), so the state does not record
        # the path of one operator's checkout.
        context = os.path.relpath(REPO_ROOT, Path.cwd())
        self.image = docker.Image(
            "proxy",
            image_name=args.image_name,
            build=docker.DockerBuildArgs(
                context=context,
                dockerfile=os.path.join(context, "proxy", "Dockerfile"),
                args={"BASE_IMAGE": args.base_image},
            ),
            # Built on the Docker host itself (DOCKER_HOST), never pushed to a registry.
            skip_push=True,
            opts=child,
        )
        secrets = args.secrets
        # Audit rows wait here while Postgres is unreachable; see docker-compose.yml.
        self.spool_volume = docker.Volume(
            "proxy-spool", name=f"{args.name_prefix}_proxy-spool", opts=child
        )
        self.container = docker.Container(
            "proxy",
            name=f"{args.name_prefix}-proxy",
            # The digest, not the tag: a rebuilt image must replace the running container.
            image=self.image.repo_digest,
            restart="unless-stopped",
            **confined(),
            tmpfs=tmpfs("/tmp"),
            envs=pulumi.Output.all(
                secrets.proxy_db_password,
                secrets.jwt_secret,
                secrets.metrics_token,
                secrets.redis_password,
            ).apply(
                lambda values: [
                    "PROXY_ENV=production",
                    "PROXY_HOST=0.0.0.0",
                    f"PROXY_PORT={CONTAINER_PORT}",
                    "OLLAMA_URL=http://ollama:11434",
                    # Its own role, owner of the database only; never the superuser.
                    f"DATABASE_URL=postgresql://{PROXY_DB_ROLE}:{values[0]}@postgres:5432/llm",
                    f"REDIS_URL=redis://:{values[3]}@redis:6379/0",
                    f"JWT_SECRET={values[1]}",
                    f"JWT_AUDIENCE={args.jwt_audience}",
                    f"JWT_ISSUER={args.jwt_issuer}",
                    f"PROXY_METRICS_TOKEN={values[2]}",
                    f"PROXY_TRUSTED_PROXIES={args.trusted_proxies}",
                    f"PROXY_AUDIT_RETENTION_DAYS={args.audit_retention_days}",
                    f"PROXY_AUDIT_SPOOL_PATH={SPOOL_DIR}/audit-spool.jsonl",
                ]
            ),
            volumes=[
                docker.ContainerVolumeArgs(
                    volume_name=self.spool_volume.name, container_path=SPOOL_DIR
                )
            ],
            ports=[
                docker.ContainerPortArgs(
                    internal=CONTAINER_PORT, external=args.publish_port, ip=args.publish_address
                )
            ],
            networks_advanced=args.networks.attach(
                "proxy", args.networks.backend, args.networks.frontend, args.networks.redis
            ),
            healthcheck=docker.ContainerHealthcheckArgs(
                tests=[
                    "CMD",
                    "/opt/venv/bin/python",
                    "-c",
                    "import urllib.request; urllib.request.urlopen("
                    "'http://127.0.0.1:8000/api/llm/status', timeout=4)",
                ],
                interval="15s",
                timeout="5s",
                retries=5,
                start_period="20s",
            ),
            wait=True,
            wait_timeout=180,
            opts=pulumi.ResourceOptions(parent=self, depends_on=args.depends_on),
        )
        self.register_outputs(
            {
                "image": self.image.image_name,
                "container": self.container.name,
                "spool_volume": self.spool_volume.name,
                "url": f"http://{args.publish_address}:{args.publish_port}",
            }
        )
