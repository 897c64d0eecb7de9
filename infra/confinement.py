"""How every container of the stack is confined: docker-compose.yml's `cap_drop: [ALL]`,
`security_opt: ["no-new-privileges:true"]` and `read_only: true`, in the provider's terms.

Files reach a container in two ways here, and with a read-only root filesystem both need a
volume: the provider uploads files (configuration, secrets) into the created container before it
starts, and Docker refuses any copy into a read-only root filesystem unless the path is on a
volume. `upload_volumes` gives such a path an anonymous volume, which lives as long as the
container (the provider removes it with the container), so a replaced container starts from the
new files only. A tmpfs would not do: it is mounted at start, over what was uploaded.
"""

from __future__ import annotations

from typing import Any

import pulumi_docker as docker

NO_NEW_PRIVILEGES = "no-new-privileges:true"


def confined(read_only: bool = True) -> dict[str, Any]:
    """Keyword arguments for `docker.Container`: no capability, no privilege gain, read-only
    (`read_only=False` only where docker-compose.yml says why)."""
    return {
        "capabilities": docker.ContainerCapabilitiesArgs(drops=["ALL"]),
        "security_opts": [NO_NEW_PRIVILEGES],
        "read_only": read_only,
    }


def tmpfs(*paths: str) -> dict[str, str]:
    """Writable scratch directories (compose's `tmpfs:` list), with Docker's default options."""
    return dict.fromkeys(paths, "")


def upload_volumes(*paths: str) -> list[docker.ContainerVolumeArgs]:
    """Anonymous volumes for the directories the provider uploads files into."""
    return [docker.ContainerVolumeArgs(container_path=path) for path in paths]
