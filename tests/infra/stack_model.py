"""One shape for the stack, built from either side, so that Compose and Pulumi can be compared.

What is compared, per service: image (and for the proxy the build: context, Dockerfile, args),
networks, published ports (host ip, host port, container port, protocol), environment (keys and
values: both sides get the same dummy secrets), named volumes and their mount points, files
placed in the container (Compose bind mounts of repository paths expanded to files with a
content hash; Pulumi uploads hashed the same way), host paths bound into the container (source,
target, read-only, propagation: the exporters' views of the host), secret files, GPU device
requests, memory limit in bytes, healthcheck, command, PID namespace and restart policy, and the
confinement: user, capabilities dropped and added, security options, read-only root filesystem
and tmpfs mounts. Plus the stack's networks (internal or not) and volumes.

Anonymous volumes are not compared: they are how files reach a read-only container (Compose
copies its secrets in, Pulumi uploads configuration and secrets), so each tool has the ones its
own way of delivering files needs; the policy tests check that they are there.

Docker names are mapped back to Compose's logical names: Pulumi's `llm-stack_backend` network is
`backend`, its `llm-stack_ollama-models` volume is `ollama-models`; containers are named after
their Compose service.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from tests.infra.mocked_program import REPO_ROOT, Deployment

SECRETS_DIR = "/run/secrets/"


def _digest(text: str | bytes) -> str:
    data = text.encode() if isinstance(text, str) else text
    return hashlib.sha256(data).hexdigest()[:16]


def _bind_files(source: Path, target: str) -> dict[str, str]:
    if source.is_file():
        return {target: _digest(source.read_bytes())}
    return {
        f"{target}/{path.relative_to(source).as_posix()}": _digest(path.read_bytes())
        for path in sorted(source.rglob("*"))
        if path.is_file()
    }


def _in_repository(path: str) -> bool:
    return Path(path).resolve().is_relative_to(REPO_ROOT)


def _relative(path: str) -> str:
    resolved = (REPO_ROOT / path).resolve()
    return resolved.relative_to(REPO_ROOT).as_posix() or "."


def _unescaped(argv: list[str] | None) -> list[str] | None:
    """`docker compose config` writes a literal `$` as `$$` (so its output reads back the same);
    the container gets `$`, which is what the Pulumi program declares."""
    return None if argv is None else [arg.replace("$$", "$") for arg in argv]


def _healthcheck(check: dict[str, Any] | None, test_key: str) -> dict[str, Any] | None:
    if not check:
        return None
    return {
        "test": _unescaped(list(check[test_key])) if test_key == "test" else list(check[test_key]),
        "interval": check.get("interval"),
        "timeout": check.get("timeout"),
        "retries": int(check["retries"]) if check.get("retries") is not None else None,
        "start_period": check.get("start_period", check.get("startPeriod")),
    }


def _tmpfs_compose(entries: list[str] | None) -> dict[str, str]:
    """Compose's `tmpfs:` entries ("/path" or "/path:options") as path -> options."""
    parsed: dict[str, str] = {}
    for entry in entries or []:
        path, _, options = entry.partition(":")
        parsed[path] = options
    return parsed


def _gpu(devices: list[dict[str, Any]] | None) -> list[tuple[str, int, tuple[str, ...]]]:
    return sorted(
        (d["driver"], int(d["count"]), tuple(sorted(d["capabilities"]))) for d in devices or []
    )


def from_compose(rendered: dict[str, Any]) -> dict[str, Any]:
    services: dict[str, Any] = {}
    for name, svc in rendered["services"].items():
        volumes: list[tuple[str, str]] = []
        files: dict[str, str] = {}
        host_mounts: list[tuple[str, str, bool, str]] = []
        for mount in svc.get("volumes", []):
            if mount["type"] == "volume" and not mount.get("source"):
                continue  # anonymous: see the module docstring
            if mount["type"] == "volume":
                volumes.append((mount["source"], mount["target"]))
            elif mount["type"] == "bind" and _in_repository(mount["source"]):
                files |= _bind_files(Path(mount["source"]), mount["target"])
            elif mount["type"] == "bind":
                host_mounts.append((
                    mount["source"],
                    mount["target"],
                    bool(mount.get("read_only", False)),
                    mount.get("bind", {}).get("propagation") or "",
                ))
            else:
                raise AssertionError(f"{name}: unexpected mount type {mount['type']!r}")
        resources = svc.get("deploy", {}).get("resources", {})
        memory = resources.get("limits", {}).get("memory")
        build = svc.get("build")
        services[name] = {
            "image": svc.get("image"),
            "build": None
            if build is None
            else {
                "context": _relative(build["context"]),
                "dockerfile": build.get("dockerfile", "Dockerfile"),
                "args": dict(build.get("args", {})),
            },
            "networks": sorted(svc.get("networks", {})),
            "ports": sorted(
                (
                    p.get("host_ip", "0.0.0.0"),
                    int(p["published"]),
                    int(p["target"]),
                    p.get("protocol", "tcp"),
                )
                for p in svc.get("ports", [])
            ),
            "environment": dict(svc.get("environment", {})),
            "volumes": sorted(volumes),
            "files": files,
            "host_mounts": sorted(host_mounts),
            "secrets": sorted(
                SECRETS_DIR + (s.get("target") or s["source"]) for s in svc.get("secrets", [])
            ),
            "gpu": _gpu(resources.get("reservations", {}).get("devices")),
            "memory": int(memory) if memory is not None else None,
            "healthcheck": _healthcheck(svc.get("healthcheck"), "test"),
            "command": _unescaped(svc.get("command")),
            "pid": svc.get("pid"),
            "restart": svc.get("restart"),
            "user": svc.get("user"),
            "cap_drop": sorted(svc.get("cap_drop", [])),
            "cap_add": sorted(svc.get("cap_add", [])),
            "security_opt": sorted(svc.get("security_opt", [])),
            "read_only": bool(svc.get("read_only", False)),
            "tmpfs": _tmpfs_compose(svc.get("tmpfs")),
        }
    return {
        "services": services,
        "networks": {
            name: bool(net.get("internal", False)) for name, net in rendered["networks"].items()
        },
        "volumes": sorted(rendered.get("volumes", {})),
    }


def _logical(docker_name: str, prefix: str) -> str:
    return docker_name.removeprefix(f"{prefix}_")


def from_pulumi(deployment: Deployment, prefix: str = "llm-stack") -> dict[str, Any]:
    images = {name: r.plain for name, r in deployment.images.items()}
    services: dict[str, Any] = {}
    for name, resource in deployment.containers.items():
        c = resource.plain
        uploads = c.get("uploads", [])
        build = images.get(name, {}).get("build")
        memory = c.get("memory")
        services[name] = {
            "image": c["image"],
            "build": None
            if build is None
            else {
                # The program writes both paths relative to the directory `pulumi` runs in.
                "context": _relative(str(Path(build["context"]).resolve())),
                "dockerfile": Path(build["dockerfile"])
                .resolve()
                .relative_to(Path(build["context"]).resolve())
                .as_posix(),
                "args": dict(build.get("args", {})),
            },
            "networks": sorted(_logical(n["name"], prefix) for n in c.get("networksAdvanced", [])),
            "ports": sorted(
                (
                    p.get("ip", "0.0.0.0"),
                    int(p["external"]),
                    int(p["internal"]),
                    p.get("protocol", "tcp"),
                )
                for p in c.get("ports", [])
            ),
            "environment": dict(e.split("=", 1) for e in c.get("envs", [])),
            "volumes": sorted(
                (_logical(v["volumeName"], prefix), v["containerPath"])
                for v in c.get("volumes", [])
                if v.get("volumeName")  # anonymous: see the module docstring
            ),
            "files": {
                u["file"]: _digest(u["content"])
                for u in uploads
                if not u["file"].startswith(SECRETS_DIR)
            },
            "host_mounts": sorted(
                (
                    m["source"],
                    m["target"],
                    bool(m.get("readOnly", False)),
                    (m.get("bindOptions") or {}).get("propagation") or "",
                )
                for m in c.get("mounts", [])
                if m["type"] == "bind"
            ),
            "secrets": sorted(u["file"] for u in uploads if u["file"].startswith(SECRETS_DIR)),
            "gpu": _gpu(c.get("deviceRequests")),
            "memory": int(memory) * 1024 * 1024 if memory else None,
            "healthcheck": _healthcheck(c.get("healthcheck"), "tests"),
            "command": c.get("command"),
            "pid": c.get("pidMode"),
            "restart": c.get("restart"),
            "user": c.get("user"),
            "cap_drop": sorted((c.get("capabilities") or {}).get("drops", [])),
            "cap_add": sorted((c.get("capabilities") or {}).get("adds", [])),
            "security_opt": sorted(c.get("securityOpts", [])),
            "read_only": bool(c.get("readOnly", False)),
            "tmpfs": dict(c.get("tmpfs") or {}),
        }
    return {
        "services": services,
        "networks": {
            _logical(r.plain["name"], prefix): bool(r.plain.get("internal", False))
            for r in deployment.networks.values()
        },
        "volumes": sorted(_logical(r.plain["name"], prefix) for r in deployment.volumes.values()),
    }


def differences(compose: dict[str, Any], pulumi: dict[str, Any]) -> list[str]:
    """Human-readable differences, each naming the service and the field."""
    found: list[str] = []
    for key in ("networks", "volumes"):
        if compose[key] != pulumi[key]:
            found.append(f"stack {key}: compose {compose[key]} != pulumi {pulumi[key]}")
    c_services, p_services = compose["services"], pulumi["services"]
    for name in sorted(set(c_services) ^ set(p_services)):
        side = "compose" if name in c_services else "pulumi"
        found.append(f"service {name!r} is declared only in {side}")
    for name in sorted(set(c_services) & set(p_services)):
        for field, c_value in c_services[name].items():
            p_value = p_services[name][field]
            if c_value != p_value:
                found.append(f"{name}.{field}: compose {c_value!r} != pulumi {p_value!r}")
    return found
