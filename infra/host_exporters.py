"""Node exporter and cAdvisor: the host's and the containers' metrics, on every host."""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_docker as docker

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
    "--docker_only=true",
    "--housekeeping_interval=15s",
    "--store_container_labels=false",
    "--disable_metrics=advtcp,cpu_topology,cpuset,disk,diskIO,hugetlb,memory_numa,percpu,"
    "process,referenced_memory,resctrl,sched,tcp,udp",
]
# Host path -> container path, all read-only: what cAdvisor reads containers' cgroups and
# Docker's state from.
CADVISOR_HOST_PATHS = {
    "/": "/rootfs",
    "/var/run": "/var/run",
    "/sys": "/sys",
    "/var/lib/docker": "/var/lib/docker",
    "/dev/disk": "/dev/disk",
}


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
    networks: Networks
    # Pulumi's `gpu: true`, as docker-compose.gpu.yml: node exporter reports that a GPU is due.
    gpu_expected: bool


class HostExporters(pulumi.ComponentResource):
    """The `node-exporter` and `cadvisor` services of docker-compose.yml.

    Prometheus scrapes them over `backend` (`node-exporter:9100`, `cadvisor:8080`); neither
    publishes a port. Both see the host only through read-only mounts.
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
            command=NODE_EXPORTER_COMMAND,
            # The host's process table, so that /proc/1/mounts lists the host's filesystems.
            pid_mode="host",
            # rslave: filesystems mounted on the host later (a new disk) show up too.
            mounts=[read_only_bind("/", "/host", "rslave")],
            uploads=directory_uploads(TEXTFILES[args.gpu_expected], NODE_EXPORTER_TEXTFILE_DIR),
            networks_advanced=networks.attach("node-exporter", networks.backend),
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
            command=CADVISOR_COMMAND,
            mounts=[read_only_bind(host, target) for host, target in CADVISOR_HOST_PATHS.items()],
            networks_advanced=networks.attach("cadvisor", networks.backend),
            opts=child,
        )
        self.register_outputs(
            {"node_exporter": self.node_exporter.name, "cadvisor": self.cadvisor.name}
        )
