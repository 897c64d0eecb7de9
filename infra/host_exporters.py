"""Node exporter and cAdvisor (with its read-only Docker API proxy): the host's and the
containers' metrics, on every host."""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_docker as docker

from infra.confinement import confined, upload_volumes
from infra.monitoring import DASHBOARDS, directory_uploads
from infra.network import Networks

NODE_EXPORTER_TEXTFILE_DIR = "/etc/node-exporter/textfile"
# Written by dashboards/build.py: `llm_stack_gpu_expected` 0 or 1, which gates GpuNotDetected.
TEXTFILES = {
    False: DASHBOARDS / "node-exporter" / "textfile-cpu",
    True: DASHBOARDS / "node-exporter" / "textfile-gpu",
}
# The same flags as docker-compose.yml (see the comments there).
NODE_EXPORTER_COMMAND = [
    "--path.rootfs=/host",
    f"--collector.textfile.directory={NODE_EXPORTER_TEXTFILE_DIR}",
]
CADVISOR_COMMAND = [
    "--docker=tcp://docker-api:2375",
    "--docker_only=true",
    "--housekeeping_interval=15s",
    "--store_container_labels=false",
    "--disable_metrics=advtcp,cpu_topology,cpuset,disk,diskIO,hugetlb,memory_numa,network,"
    "percpu,process,referenced_memory,resctrl,sched,tcp,udp",
]
# Host path -> container path, all read-only: the containers' cgroups and their layer ids. Not
# the Docker socket, nor `/` (see docker-compose.yml for what cAdvisor does without them).
CADVISOR_HOST_PATHS = {
    "/sys": "/sys",
    "/var/lib/docker/image": "/var/lib/docker/image",
}
DOCKER_SOCKET = "/var/run/docker.sock"
DOCKER_API_CONFIG_DIR = "/usr/local/etc/haproxy"
DOCKER_API_CONFIG = DASHBOARDS / "docker-api" / "haproxy.cfg"


def read_only_bind(source: str, target: str, propagation: str | None = None
                   ) -> docker.ContainerMountArgs:
    return docker.ContainerMountArgs(
        type="bind",
        source=source,
        target=target,
        read_only=True,
        bind_options=docker.ContainerMountBindOptionsArgs(propagation=propagation)
        if propagation
        else None,
    )


@dataclass
class HostExportersArgs:
    name_prefix: str
    node_exporter_image: str
    cadvisor_image: str
    docker_api_image: str
    networks: Networks
    # Pulumi's `gpu: true`, as docker-compose.gpu.yml: node exporter reports that a GPU is due.
    gpu_expected: bool


class HostExporters(pulumi.ComponentResource):
    """The `node-exporter`, `cadvisor` and `docker-api` services of docker-compose.yml.

    Prometheus scrapes the exporters over `backend` (`node-exporter:9100`, `cadvisor:8080`);
    none publishes a port. The exporters see the host only through read-only mounts; only
    `docker-api` holds the Docker socket, and only cAdvisor reaches it, over `docker-api`.
    """

    def __init__(
        self, name: str, args: HostExportersArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("llm-stack:infra:HostExporters", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        networks = args.networks

        node_image = docker.RemoteImage(
            "node-exporter", name=args.node_exporter_image, keep_locally=True, opts=child
        )
        self.node_exporter = docker.Container(
            "node-exporter",
            name=f"{args.name_prefix}-node-exporter",
            image=node_image.image_id,
            restart="unless-stopped",
            **confined(),
            command=NODE_EXPORTER_COMMAND,
            # The host's process table, so that /proc/1/mounts lists the host's filesystems.
            pid_mode="host",
            # rslave: filesystems mounted on the host later (a new disk) show up too.
            mounts=[read_only_bind("/", "/host", "rslave")],
            uploads=directory_uploads(TEXTFILES[args.gpu_expected], NODE_EXPORTER_TEXTFILE_DIR),
            volumes=upload_volumes(NODE_EXPORTER_TEXTFILE_DIR),
            networks_advanced=networks.attach("node-exporter", networks.backend),
            opts=child,
        )

        docker_api_image = docker.RemoteImage(
            "docker-api", name=args.docker_api_image, keep_locally=True, opts=child
        )
        self.docker_api = docker.Container(
            "docker-api",
            name=f"{args.name_prefix}-docker-api",
            image=docker_api_image.image_id,
            restart="unless-stopped",
            **confined(),
            # Root (without capabilities) to open the socket, which is root:docker 0660.
            user="root",
            mounts=[read_only_bind(DOCKER_SOCKET, DOCKER_SOCKET)],
            uploads=[
                docker.ContainerUploadArgs(
                    file=f"{DOCKER_API_CONFIG_DIR}/haproxy.cfg",
                    content=DOCKER_API_CONFIG.read_text(encoding="utf-8"),
                )
            ],
            volumes=upload_volumes(DOCKER_API_CONFIG_DIR),
            networks_advanced=networks.attach("docker-api", networks.docker_api),
            opts=child,
        )

        cadvisor_image = docker.RemoteImage(
            "cadvisor", name=args.cadvisor_image, keep_locally=True, opts=child
        )
        self.cadvisor = docker.Container(
            "cadvisor",
            name=f"{args.name_prefix}-cadvisor",
            image=cadvisor_image.image_id,
            restart="unless-stopped",
            **confined(),
            command=CADVISOR_COMMAND,
            mounts=[read_only_bind(host, target) for host, target in CADVISOR_HOST_PATHS.items()],
            networks_advanced=networks.attach("cadvisor", networks.backend, networks.docker_api),
            opts=pulumi.ResourceOptions(parent=self, depends_on=[self.docker_api]),
        )
        self.register_outputs(
            {
                "node_exporter": self.node_exporter.name,
                "cadvisor": self.cadvisor.name,
                "docker_api": self.docker_api.name,
            }
        )
