"""Prometheus and Grafana, with their configuration from dashboards/."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pulumi
import pulumi_docker as docker

from infra.confinement import confined, tmpfs, upload_volumes
from infra.network import Networks

DASHBOARDS = Path(__file__).resolve().parent.parent / "dashboards"
GRAFANA = DASHBOARDS / "grafana"
METRICS_TOKEN_FILE = "/run/secrets/proxy_metrics_token"


def directory_uploads(source: Path, target: str) -> list[docker.ContainerUploadArgs]:
    """Every file under `source`, placed under `target` as compose's read-only bind mount shows it.

    Uploaded rather than bind-mounted because with `DOCKER_HOST=ssh://…` the container runs on a
    host that has no checkout of this repository.
    """
    return [
        docker.ContainerUploadArgs(
            file=f"{target}/{path.relative_to(source).as_posix()}",
            content=path.read_text(encoding="utf-8"),
        )
        for path in sorted(source.rglob("*"))
        if path.is_file()
    ]


@dataclass
class MonitoringArgs:
    name_prefix: str
    prometheus_image: str
    grafana_image: str
    networks: Networks
    prometheus_bind: str
    grafana_bind: str
    metrics_token: pulumi.Output[str]
    grafana_admin_password: pulumi.Output[str]
    grafana_secret_key: pulumi.Output[str]
    # The read-only Postgres role's password for the audit-postgres datasource; "" when unset.
    grafana_audit_db_password: pulumi.Output[str]
    # Prometheus starts after the proxy it scrapes, as in compose.
    depends_on: list[pulumi.Resource]


class Monitoring(pulumi.ComponentResource):
    """The `prometheus` and `grafana` services of docker-compose.yml."""

    def __init__(
        self, name: str, args: MonitoringArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("llm-stack:infra:Monitoring", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        networks = args.networks

        prometheus_image = docker.RemoteImage(
            "prometheus", name=args.prometheus_image, keep_locally=True, opts=child
        )
        self.prometheus_volume = docker.Volume(
            "prometheus-data", name=f"{args.name_prefix}_prometheus-data", opts=child
        )
        # Compose's `secrets:` entry: a file, readable by Prometheus' unprivileged user, so the
        # token is in neither prometheus.yml nor the container's environment.
        token_upload = args.metrics_token.apply(
            lambda token: docker.ContainerUploadArgs(
                file=METRICS_TOKEN_FILE, content=token, permissions="0444"
            )
        )
        self.prometheus = docker.Container(
            "prometheus",
            name=f"{args.name_prefix}-prometheus",
            image=prometheus_image.image_id,
            restart="unless-stopped",
            # Not read-only, as in docker-compose.yml (Compose cannot copy its secret into a
            # read-only container); no capabilities and no privilege gain all the same.
            **confined(read_only=False),
            command=[
                "--config.file=/etc/prometheus/prometheus.yml",
                "--storage.tsdb.path=/prometheus",
                "--storage.tsdb.retention.time=15d",
            ],
            uploads=[
                *directory_uploads(DASHBOARDS / "prometheus", "/etc/prometheus"),
                token_upload,
            ],
            volumes=[
                docker.ContainerVolumeArgs(
                    volume_name=self.prometheus_volume.name, container_path="/prometheus"
                )
            ],
            ports=[docker.ContainerPortArgs(internal=9090, external=9090, ip=args.prometheus_bind)],
            networks_advanced=networks.attach("prometheus", networks.backend, networks.frontend),
            healthcheck=docker.ContainerHealthcheckArgs(
                tests=["CMD", "promtool", "check", "ready", "--url=http://127.0.0.1:9090"],
                interval="15s",
                timeout="5s",
                retries=5,
            ),
            opts=pulumi.ResourceOptions(parent=self, depends_on=args.depends_on),
        )

        grafana_image = docker.RemoteImage(
            "grafana", name=args.grafana_image, keep_locally=True, opts=child
        )
        self.grafana_volume = docker.Volume(
            "grafana-data", name=f"{args.name_prefix}_grafana-data", opts=child
        )
        self.grafana = docker.Container(
            "grafana",
            name=f"{args.name_prefix}-grafana",
            image=grafana_image.image_id,
            restart="unless-stopped",
            **confined(),
            tmpfs=tmpfs("/tmp"),
            envs=pulumi.Output.all(
                args.grafana_admin_password,
                args.grafana_audit_db_password,
                args.grafana_secret_key,
            ).apply(
                lambda passwords: [
                    f"GF_SECURITY_ADMIN_PASSWORD={passwords[0]}",
                    f"GF_SECURITY_SECRET_KEY={passwords[2]}",
                    "GF_LOG_MODE=console",
                    "GF_USERS_ALLOW_SIGN_UP=false",
                    "GF_ANALYTICS_REPORTING_ENABLED=false",
                    f"GRAFANA_AUDIT_DB_PASSWORD={passwords[1]}",
                ]
            ),
            uploads=[
                *directory_uploads(GRAFANA / "provisioning", "/etc/grafana/provisioning"),
                *directory_uploads(GRAFANA / "dashboards", "/etc/grafana/dashboards"),
            ],
            volumes=[
                docker.ContainerVolumeArgs(
                    volume_name=self.grafana_volume.name, container_path="/var/lib/grafana"
                ),
                *upload_volumes("/etc/grafana/provisioning", "/etc/grafana/dashboards"),
            ],
            ports=[docker.ContainerPortArgs(internal=3000, external=3000, ip=args.grafana_bind)],
            networks_advanced=networks.attach("grafana", networks.frontend, networks.analytics),
            healthcheck=docker.ContainerHealthcheckArgs(
                tests=[
                    "CMD",
                    "curl",
                    "-fsS",
                    "-o",
                    "/dev/null",
                    "http://127.0.0.1:3000/api/health",
                ],
                interval="15s",
                timeout="5s",
                retries=5,
                start_period="30s",
            ),
            opts=pulumi.ResourceOptions(parent=self, depends_on=[self.prometheus]),
        )
        self.register_outputs(
            {
                "prometheus": self.prometheus.name,
                "grafana": self.grafana.name,
                "prometheus_url": f"http://{args.prometheus_bind}:9090",
                "grafana_url": f"http://{args.grafana_bind}:3000",
            }
        )
