"""The services of `docker compose config`, deployed with pulumi_docker, one generic way.

Compose field -> pulumi_docker:
- networks: a `Network` each, with compose's Docker name (`<project>_<net>`) and `internal`;
  a service joins with its service name as alias, as compose's DNS has it.
- volumes: a `Volume` each (`<project>_<vol>`), kept when the resource is deleted, as
  `docker compose down` keeps them: a host moved between the two keeps its data.
- image: a `RemoteImage` (kept locally); `build` (context, dockerfile, args): an `Image` built on
  the Docker host and never pushed, the container then runs its digest.
- environment, ports (host_ip, published, target), tmpfs, cap_drop/cap_add, security_opt,
  read_only, user, command, entrypoint, pid, restart, healthcheck, memory limit, GPU device
  reservations: the Container's arguments of the same meaning.
- volumes of a service: named and anonymous volumes as they are; a bind of a host path as a bind
  mount on the Docker host; a bind of a repository path as files uploaded into the container,
  since the Docker host (`DOCKER_HOST=ssh://…`) need not have a checkout.
- secrets (read from the environment): uploaded files under /run/secrets.
- depends_on: Pulumi's depends_on; `service_healthy` makes the dependency wait to be healthy.

Docker refuses to copy files into a read-only root filesystem unless the path is on a volume, so
in a read-only container every directory that receives uploads gets an anonymous volume: it lives
as long as the container, and Docker fills it from the image first, so nothing of the image's
own files there is lost. A tmpfs would not do: it is mounted at start, over what was uploaded.

Any other compose field stops the program with the service and the field: a change to the compose
files that this translation cannot carry must never be dropped silently.
"""

from __future__ import annotations

import base64
import json
import os
import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from functools import partial
from graphlib import TopologicalSorter
from pathlib import Path, PurePosixPath
from typing import Any

import pulumi
import pulumi_docker as docker

from infra.config import MIB, PLACEHOLDER

SECRETS_DIR = "/run/secrets"
# Compose's default mode for a secret file; Docker's healthcheck defaults.
SECRET_MODE = 0o444
HEALTHCHECK_DEFAULTS = {"interval": 30.0, "timeout": 30.0, "start_period": 0.0, "retries": 3}
_DURATION = re.compile(r"(\d+(?:\.\d+)?)(h|ms|m|s|us|µs|ns)")
_SECONDS = {"h": 3600, "m": 60, "s": 1, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "ns": 1e-9}


TOP_FIELDS = {"name", "services", "networks", "volumes", "secrets"}
# What the translation carries; anything else a service says stops the program.
SERVICE_FIELDS = set(
    "image build container_name restart environment ports volumes secrets tmpfs cap_drop cap_add "
    "security_opt read_only user command entrypoint pid healthcheck deploy networks "
    "depends_on".split()
)
PORT_FIELDS = {"mode", "host_ip", "target", "published", "protocol"}
HEALTHCHECK_FIELDS = set(
    "test interval timeout retries start_period start_interval disable".split()
)
DEVICE_FIELDS = {"driver", "count", "capabilities", "device_ids"}
STARTED, HEALTHY = "service_started", "service_healthy"


class UnsupportedCompose(ValueError):
    """A compose field the translation does not carry; the message names service and field."""


def _says_nothing(value: Any) -> bool:
    return value is None or value is False or (isinstance(value, str | list | dict) and not value)


def _fields(where: str, mapping: Mapping[str, Any], supported: Collection[str]) -> dict[str, Any]:
    """`mapping`'s supported entries; UnsupportedCompose for any other entry that says something."""
    for key, value in mapping.items():
        if key not in supported and not _says_nothing(value):
            raise UnsupportedCompose(
                f"{where}: the compose field {key!r} ({json.dumps(value)}) is not supported by "
                "the Pulumi program; deploy with `docker compose`, or teach infra/stack.py to "
                "translate it"
            )
    return {key: value for key, value in mapping.items() if key in supported and value is not None}


def _unescaped(value: Any) -> Any:
    """`docker compose config` writes a literal `$` as `$$` so that its output reads back the
    same; the container gets `$`."""
    if isinstance(value, str):
        return value.replace("$$", "$")
    if isinstance(value, list):
        return [_unescaped(item) for item in value]
    if isinstance(value, dict):
        return {key: _unescaped(item) for key, item in value.items()}
    return value


def _seconds(duration: str) -> float:
    """A Go duration as compose writes it ("1m30s", "500ms") in seconds."""
    return sum(float(n) * _SECONDS[unit] for n, unit in _DURATION.findall(duration))


@dataclass
class Secrets:
    """The stack's secret variables, and the placeholders compose rendered in their place."""

    values: Mapping[str, pulumi.Output[str]]

    def text(self, where: str, value: str) -> str | pulumi.Output[str]:
        """`value` with each placeholder replaced by its secret: a secret Output, if any."""
        names = PLACEHOLDER.findall(value)
        if not names:
            return value
        missing = sorted(set(names) - set(self.values))
        if missing:
            raise UnsupportedCompose(f"{where}: no value for the secret {', '.join(missing)}")

        def substitute(found: list[str]) -> str:
            by_name = dict(zip(names, found, strict=True))
            return PLACEHOLDER.sub(lambda match: by_name[match.group(1)], value)

        return pulumi.Output.all(*(self.values[name] for name in names)).apply(substitute)

    @staticmethod
    def refuse_outside(where: str, service: Mapping[str, Any], allowed: Collection[str]) -> None:
        """Secrets are carried as secrets only in the `allowed` fields: anywhere else they would
        be plain in Pulumi's state."""
        for key, value in service.items():
            found = PLACEHOLDER.search(json.dumps(value))
            if key not in allowed and found:
                raise UnsupportedCompose(
                    f"{where}: the secret {found.group(1)} is used in {key!r}, where Pulumi "
                    "cannot keep it secret; pass it through `environment` or `secrets`"
                )


def published_url(rendered: Mapping[str, Any], service: str) -> str:
    """`http://host_ip:published` of the service's first published port."""
    port = rendered["services"][service]["ports"][0]
    return f"http://{port.get('host_ip') or '0.0.0.0'}:{port['published']}"


def _uploads(root: Path, source: Path, target: str) -> list[docker.ContainerUploadArgs]:
    """The files compose's read-only bind mount of `source` shows at `target`."""
    if not source.exists():
        raise UnsupportedCompose(f"{source.relative_to(root)} is mounted but does not exist")
    files = [source] if source.is_file() else sorted(p for p in source.rglob("*") if p.is_file())
    uploads = []
    for path in files:
        file = target if path == source else f"{target}/{path.relative_to(source).as_posix()}"
        data = path.read_bytes()
        try:
            content: dict[str, str] = {"content": data.decode("utf-8")}
        except UnicodeDecodeError:
            content = {"content_base64": base64.b64encode(data).decode()}
        # Git keeps only the executable bit; Postgres runs its init scripts by it.
        executable = bool(path.stat().st_mode & 0o100) or None
        uploads.append(docker.ContainerUploadArgs(file=file, executable=executable, **content))
    return uploads


def _secret_file(file: str, permissions: str, content: str) -> docker.ContainerUploadArgs:
    return docker.ContainerUploadArgs(file=file, content=content, permissions=permissions)


class _Service:
    """One compose service, translated into a Container's arguments."""

    def __init__(self, name: str, project: ComposeStack, args: ComposeStackArgs) -> None:
        self.name = name
        self.where = f"service {name!r}"
        self.project = project
        self.rendered = args.rendered
        self.root = args.root
        self.secrets = Secrets(args.secrets)
        self.child = pulumi.ResourceOptions(parent=project)
        self.resource_name = args.resource_prefix + name
        self.uploads: list[pulumi.Input[docker.ContainerUploadArgs]] = []
        self.upload_dirs: set[str] = set()
        self.volume_paths: set[str] = set()

    def args(self, service: Mapping[str, Any]) -> dict[str, Any]:
        s = _fields(self.where, service, SERVICE_FIELDS)
        Secrets.refuse_outside(self.where, s, ("environment",))
        s = _unescaped(s)
        project = self.rendered["name"]
        args: dict[str, Any] = {
            "name": s.get("container_name") or f"{project}-{self.name}",
            "image": self.image(s),
            "capabilities": docker.ContainerCapabilitiesArgs(
                drops=s.get("cap_drop"), adds=s.get("cap_add")
            ),
            "security_opts": s.get("security_opt"),
            "read_only": bool(s.get("read_only")),
            "user": s.get("user"),
            "command": s.get("command"),
            "entrypoint": s.get("entrypoint"),
            "pid_mode": s.get("pid"),
            "envs": self.environment(s.get("environment", {})),
            "ports": [self.port(p) for p in s.get("ports", [])] or None,
            "tmpfs": self.tmpfs(s.get("tmpfs", [])),
            "networks_advanced": [
                self.network(net, attach) for net, attach in s.get("networks", {}).items()
            ],
            "healthcheck": self.healthcheck(s.get("healthcheck")),
            **self.restart(s.get("restart", "no")),
            **self.deploy(s.get("deploy", {})),
        }
        volumes, mounts = self.mounts(s.get("volumes", []))
        self.files(s.get("secrets", []))
        if args["read_only"]:
            volumes += [docker.ContainerVolumeArgs(container_path=d) for d in self.upload_volumes()]
        args.update(volumes=volumes or None, mounts=mounts or None, uploads=self.uploads or None)
        return {key: value for key, value in args.items() if value is not None}

    def image(self, s: Mapping[str, Any]) -> pulumi.Output[str]:
        name = s.get("image") or f"{self.rendered['name']}-{self.name}"
        if "build" not in s:
            remote = docker.RemoteImage(
                self.resource_name, name=name, keep_locally=True, opts=self.child)
            return remote.image_id
        build = _fields(f"{self.where} build", s["build"], {"context", "dockerfile", "args"})
        # Relative to where `pulumi` runs (the repository root), so that the state does not
        # record the path of one operator's checkout.
        context = os.path.relpath(build["context"], Path.cwd())
        built = docker.Image(
            self.resource_name,
            image_name=name,
            build=docker.DockerBuildArgs(
                context=context,
                dockerfile=os.path.join(context, build.get("dockerfile", "Dockerfile")),
                args=build.get("args"),
            ),
            # Built on the Docker host itself, never pushed to a registry.
            skip_push=True,
            opts=self.child,
        )
        # The digest, not the tag: a rebuilt image must replace the running container.
        return built.repo_digest

    def environment(self, env: Mapping[str, str | None]) -> Any:
        items = [
            self.secrets.text(f"{self.where} environment {key}", f"{key}={value}")
            for key, value in env.items()
            if value is not None
        ]
        if not any(isinstance(item, pulumi.Output) for item in items):
            return items or None
        # One Output for the whole list, so that all of it stays a secret in Pulumi's state.
        return pulumi.Output.all(*items).apply(list)

    def port(self, port: Mapping[str, Any]) -> docker.ContainerPortArgs:
        p = _fields(f"{self.where} ports", port, PORT_FIELDS)
        published = p.get("published")
        if published is not None and not str(published).isdigit():
            raise UnsupportedCompose(
                f"{self.where} ports: the range {published!r} is not supported; publish each port"
            )
        return docker.ContainerPortArgs(
            internal=int(p["target"]),
            # Unset publishes on a random host port, as compose does.
            external=int(published) if published is not None else None,
            ip=p.get("host_ip") or "0.0.0.0",
            protocol=p.get("protocol", "tcp"),
        )

    @staticmethod
    def tmpfs(entries: list[str] | str) -> dict[str, str] | None:
        """Compose's `tmpfs` ("/path" or "/path:options") as path -> options."""
        listed = [entries] if isinstance(entries, str) else entries
        return {path: options for path, _, options in (e.partition(":") for e in listed)} or None

    def network(self, net: str, attach: Mapping[str, Any] | None) -> Any:
        a = _fields(f"{self.where} networks {net}", attach or {}, {"aliases"})
        return docker.ContainerNetworksAdvancedArgs(
            name=self.project.networks[net].name, aliases=[self.name, *a.get("aliases", [])]
        )

    def healthcheck(self, check: Mapping[str, Any] | None) -> Any:
        if not check:
            return None
        c = _fields(f"{self.where} healthcheck", check, HEALTHCHECK_FIELDS)
        if c.get("disable"):
            return docker.ContainerHealthcheckArgs(tests=["NONE"])
        return docker.ContainerHealthcheckArgs(
            tests=c["test"],
            interval=c.get("interval"),
            timeout=c.get("timeout"),
            retries=c.get("retries"),
            start_period=c.get("start_period"),
            start_interval=c.get("start_interval"),
        )

    def restart(self, policy: str) -> dict[str, Any]:
        name, _, retries = policy.partition(":")
        return {"restart": name, **({"max_retry_count": int(retries)} if retries else {})}

    def deploy(self, deploy: Mapping[str, Any]) -> dict[str, Any]:
        where = f"{self.where} deploy"
        # One container per service, as compose runs it by default.
        single = {key: value for key, value in deploy.items() if (key, value) != ("replicas", 1)}
        d = _fields(where, single, {"resources"})
        resources = d.get("resources", {})
        resources = _fields(f"{where}.resources", resources, {"limits", "reservations"})
        limits = _fields(f"{where}.resources.limits", resources.get("limits", {}), {"memory"})
        reservations = resources.get("reservations", {})
        reservations = _fields(f"{where}.resources.reservations", reservations, {"devices"})
        args: dict[str, Any] = {}
        if "memory" in limits:
            size = int(limits["memory"])
            if size % MIB or size == 0:
                raise UnsupportedCompose(
                    f"{where}.resources.limits.memory: {size} bytes is not a whole number of MiB, "
                    "which Docker's provider needs"
                )
            args["memory"] = size // MIB
        devices = [
            _fields(f"{where}.resources.reservations.devices", device, DEVICE_FIELDS)
            for device in reservations.get("devices", [])
        ]
        if devices:
            args["device_requests"] = [
                docker.ContainerDeviceRequestArgs(
                    driver=d.get("driver"),
                    count=d.get("count"),
                    capabilities=d.get("capabilities"),
                    device_ids=d.get("device_ids"),
                )
                for d in devices
            ]
        return args

    def mounts(
        self, entries: list[Mapping[str, Any]]
    ) -> tuple[list[docker.ContainerVolumeArgs], list[docker.ContainerMountArgs]]:
        volumes: list[docker.ContainerVolumeArgs] = []
        mounts: list[docker.ContainerMountArgs] = []
        for entry in entries:
            where = f"{self.where} volumes {entry.get('target')}"
            m = _fields(where, entry, {"type", "source", "target", "read_only", "bind", "volume"})
            target, read_only = m["target"], bool(m.get("read_only"))
            if m["type"] == "volume":
                _fields(where, m.get("volume", {}), ())
                volume = self.project.volumes[m["source"]].name if m.get("source") else None
                volumes.append(
                    docker.ContainerVolumeArgs(
                        volume_name=volume, container_path=target, read_only=read_only or None
                    )
                )
                self.volume_paths.add(target)
                continue
            if m["type"] != "bind":
                raise UnsupportedCompose(f"{where}: mounts of type {m['type']!r} are not supported")
            bind = _fields(where, m.get("bind", {}), {"propagation", "create_host_path"})
            source = Path(m["source"])
            if not source.is_relative_to(self.root):
                propagation = bind.get("propagation")
                options = docker.ContainerMountBindOptionsArgs(propagation=propagation)
                mounts.append(
                    docker.ContainerMountArgs(
                        type="bind",
                        source=str(source),
                        target=target,
                        read_only=read_only,
                        bind_options=options if propagation else None,
                    )
                )
                continue
            if not read_only:
                raise UnsupportedCompose(
                    f"{where}: a writable bind mount of a repository path; Pulumi uploads "
                    "repository files, so mount it read-only (:ro)"
                )
            self.uploads += _uploads(self.root, source, target)
            self.upload_dirs.add(target if source.is_dir() else str(PurePosixPath(target).parent))
        return volumes, mounts

    def files(self, entries: list[Mapping[str, Any]]) -> None:
        """Compose `secrets:` read from the environment, as files only this container sees."""
        for entry in entries:
            e = _fields(f"{self.where} secrets", entry, {"source", "target", "mode"})
            source = e["source"]
            where = f"secret {source!r}"
            definition = _fields(where, self.rendered["secrets"][source], {"name", "environment"})
            if "environment" not in definition:
                raise UnsupportedCompose(
                    f"{where}: only secrets read from the environment (`environment:`) are "
                    "supported"
                )
            target = PurePosixPath(SECRETS_DIR, e.get("target") or source)
            value = self.secrets.values.get(definition["environment"])
            if value is None:
                raise UnsupportedCompose(f"{where}: {definition['environment']} has no value")
            permissions = f"{e.get('mode', SECRET_MODE):04o}"
            self.uploads.append(value.apply(partial(_secret_file, str(target), permissions)))
            self.upload_dirs.add(str(target.parent))

    def upload_volumes(self) -> list[str]:
        """The upload directories that no volume holds yet, outermost only."""
        def under(path: str, directory: str) -> bool:
            return PurePosixPath(path).is_relative_to(directory)

        dirs = sorted(
            d for d in self.upload_dirs if not any(under(d, v) for v in self.volume_paths)
        )
        return [d for d in dirs if not any(under(d, o) for o in dirs if o != d)]


@dataclass
class ComposeStackArgs:
    # `docker compose config --format json`, rendered with placeholders for the secrets.
    rendered: Mapping[str, Any]
    # The checkout the compose files are in: bind mounts under it become uploads.
    root: Path
    # Compose variable -> its secret value, put where compose rendered its placeholder.
    secrets: Mapping[str, pulumi.Output[str]]
    # Before each child resource's name: "" for the stack (names as they always were), the
    # engine's name for an engine host's project, so that both can be in one Pulumi stack.
    resource_prefix: str = ""


class ComposeStack(pulumi.ComponentResource):
    """Every network, volume and service of a rendered compose project, on the Docker host."""

    def __init__(
        self, name: str, args: ComposeStackArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("llm-stack:infra:ComposeStack", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        top = _fields("the compose project", args.rendered, TOP_FIELDS)
        self.networks: dict[str, docker.Network] = {}
        self.volumes: dict[str, docker.Volume] = {}
        self.containers: dict[str, docker.Container] = {}
        for net, network in top.get("networks", {}).items():
            n = _fields(f"network {net!r}", network, {"name", "internal"})
            self.networks[net] = docker.Network(
                args.resource_prefix + net, name=n["name"], internal=n.get("internal", False),
                opts=child,
            )
        for vol, volume in top.get("volumes", {}).items():
            v = _fields(f"volume {vol!r}", volume, {"name"})
            # Kept on delete, as `docker compose down` keeps volumes: the models, the database.
            self.volumes[vol] = docker.Volume(
                args.resource_prefix + vol, name=v["name"],
                opts=pulumi.ResourceOptions(parent=self, retain_on_delete=True),
            )

        services: Mapping[str, Any] = top["services"]
        depends = {name: _dependencies(name, s) for name, s in services.items()}
        healthy = {dep for deps in depends.values() for dep, c in deps.items() if c == HEALTHY}
        for name in TopologicalSorter({n: set(d) for n, d in depends.items()}).static_order():
            container = _Service(name, self, args).args(services[name])
            if name in healthy:
                if "healthcheck" not in container:
                    raise UnsupportedCompose(
                        f"service {name!r}: others wait for it to be healthy, but it has no "
                        "healthcheck"
                    )
                wait = wait_timeout(services[name]["healthcheck"])
                container.update(wait=True, wait_timeout=wait)
            after = [self.containers[dep] for dep in depends[name]]
            self.containers[name] = docker.Container(
                args.resource_prefix + name, **container,
                opts=pulumi.ResourceOptions(parent=self, depends_on=after),
            )
        self.register_outputs(
            {
                "networks": {net: n.name for net, n in self.networks.items()},
                "volumes": {vol: v.name for vol, v in self.volumes.items()},
                "containers": {name: c.name for name, c in self.containers.items()},
            }
        )


def _dependencies(name: str, service: Mapping[str, Any]) -> dict[str, str]:
    """depends_on as dependency -> condition (`required: true` is compose's default)."""
    found = {}
    for dep, entry in service.get("depends_on", {}).items():
        where = f"service {name!r} depends_on {dep}"
        given = {key: value for key, value in entry.items() if (key, value) != ("required", True)}
        condition = _fields(where, given, {"condition"})["condition"]
        if condition not in (STARTED, HEALTHY):
            raise UnsupportedCompose(f"{where}: the condition {condition!r} is not supported")
        found[dep] = condition
    return found


def wait_timeout(check: Mapping[str, Any]) -> int:
    """Seconds to wait for a healthy container: twice the time Docker needs to call it unhealthy
    (start period, then every retry's interval and timeout), at least a minute."""
    def value(key: str) -> float:
        given = check.get(key)
        if given is None:
            return HEALTHCHECK_DEFAULTS[key]
        return float(given) if key == "retries" else _seconds(given)

    unhealthy = value("start_period") + value("retries") * (value("interval") + value("timeout"))
    return max(60, round(2 * unhealthy))
