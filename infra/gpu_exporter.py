"""The NVIDIA GPU metrics exporter, present only on GPU hosts."""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_docker as docker

from infra.confinement import confined, tmpfs
from infra.network import Networks


@dataclass
class GpuExporterArgs:
    name_prefix: str
    image: str
    networks: Networks


class GpuExporter(pulumi.ComponentResource):
    """The `gpu-exporter` service of docker-compose.gpu.yml (why this exporter: see that file).

    Prometheus finds it by DNS (`gpu-exporter:9835`), so it is on `backend` and publishes nothing.
    """

    def __init__(
        self, name: str, args: GpuExporterArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("llm-stack:infra:GpuExporter", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        image = docker.RemoteImage("gpu-exporter", name=args.image, keep_locally=True, opts=child)
        self.container = docker.Container(
            "gpu-exporter",
            name=f"{args.name_prefix}-gpu-exporter",
            image=image.image_id,
            restart="unless-stopped",
            **confined(),
            tmpfs=tmpfs("/tmp"),
            networks_advanced=args.networks.attach("gpu-exporter", args.networks.backend),
            # `utility` makes the NVIDIA runtime mount nvidia-smi, which the exporter runs.
            device_requests=[
                docker.ContainerDeviceRequestArgs(
                    driver="nvidia", count=-1, capabilities=["gpu", "utility"]
                )
            ],
            opts=child,
        )
        self.register_outputs({"container": self.container.name})
