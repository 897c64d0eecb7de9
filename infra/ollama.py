"""Ollama: the model server, reachable only by the stack's own services."""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_docker as docker

from infra.config import MIB
from infra.confinement import confined, tmpfs
from infra.network import Networks


@dataclass
class OllamaArgs:
    name_prefix: str
    image: str
    networks: Networks
    memory_bytes: int
    keep_alive: str
    num_parallel: int
    max_loaded_models: int
    gpu: bool


class Ollama(pulumi.ComponentResource):
    """The `ollama` service of docker-compose.yml (plus docker-compose.gpu.yml when `gpu`)."""

    def __init__(
        self, name: str, args: OllamaArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("llm-stack:infra:Ollama", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        image = docker.RemoteImage("ollama", name=args.image, keep_locally=True, opts=child)
        self.models_volume = docker.Volume(
            "ollama-models", name=f"{args.name_prefix}_ollama-models", opts=child
        )
        self.container = docker.Container(
            "ollama",
            name=f"{args.name_prefix}-ollama",
            image=image.image_id,
            restart="unless-stopped",
            **confined(),
            tmpfs=tmpfs("/tmp"),
            envs=[
                "OLLAMA_HOST=0.0.0.0:11434",
                f"OLLAMA_KEEP_ALIVE={args.keep_alive}",
                f"OLLAMA_NUM_PARALLEL={args.num_parallel}",
                f"OLLAMA_MAX_LOADED_MODELS={args.max_loaded_models}",
            ],
            volumes=[
                docker.ContainerVolumeArgs(
                    volume_name=self.models_volume.name, container_path="/root/.ollama"
                )
            ],
            # No `ports`, not even an empty-looking one: a ContainerPortArgs without `external`
            # still publishes 11434 on a random host port, on 0.0.0.0.
            networks_advanced=args.networks.attach(
                "ollama", args.networks.backend, args.networks.egress
            ),
            memory=args.memory_bytes // MIB,
            device_requests=(
                [docker.ContainerDeviceRequestArgs(driver="nvidia", count=-1, capabilities=["gpu"])]
                if args.gpu
                else None
            ),
            healthcheck=docker.ContainerHealthcheckArgs(
                tests=["CMD", "ollama", "list"],
                interval="15s",
                timeout="10s",
                retries=5,
                start_period="30s",
            ),
            # The proxy is created only once Ollama answers, as compose's `service_healthy`.
            wait=True,
            wait_timeout=300,
            opts=child,
        )
        self.register_outputs(
            {"container": self.container.name, "models_volume": self.models_volume.name}
        )
