"""The Pulumi program (`infra/__main__.py`) run under Pulumi's mock runtime.

`run_program(config, root)` sets fresh mocks and config, runs the entry point of the checkout at
`root` (the repository, or a copy of it), waits for every registration, and returns each declared
resource with its inputs as the engine would have received them: camelCase keys, numbers as
floats, secrets still wrapped (see `reveal`).
"""

from __future__ import annotations

import runpy
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from unittest.mock import patch

import pulumi
from pulumi.runtime import settings
from pulumi.runtime.rpc import _special_secret_sig, _special_sig_key
from pulumi.runtime.stack import run_pulumi_func
from pulumi.runtime.sync_await import _sync_await

from tests.infra.stack_files import PROJECT, REPO_ROOT


def reveal(value: Any) -> Any:
    """The plain value of a mock input, secrets unwrapped."""
    if isinstance(value, dict):
        if value.get(_special_sig_key) == _special_secret_sig:
            return reveal(value["value"])
        return {key: reveal(item) for key, item in value.items()}
    if isinstance(value, list):
        return [reveal(item) for item in value]
    return value


def plain_parts(value: Any) -> Iterator[Any]:
    """Every leaf of a mock input that is *not* inside a secret."""
    if isinstance(value, dict):
        if value.get(_special_sig_key) == _special_secret_sig:
            return
        for item in value.values():
            yield from plain_parts(item)
    elif isinstance(value, list):
        for item in value:
            yield from plain_parts(item)
    else:
        yield value


@dataclass(frozen=True)
class Declared:
    """One resource as the engine would have received it."""

    type: str
    name: str
    inputs: dict[str, Any]

    @property
    def plain(self) -> dict[str, Any]:
        return reveal(self.inputs)  # type: ignore[no-any-return]


@dataclass(frozen=True)
class Deployment:
    resources: list[Declared]
    outputs: dict[str, Any]

    def of_type(self, type_: str) -> dict[str, Declared]:
        return {r.name: r for r in self.resources if r.type == type_}

    @property
    def containers(self) -> dict[str, Declared]:
        return self.of_type("docker:index/container:Container")

    @property
    def networks(self) -> dict[str, Declared]:
        return self.of_type("docker:index/network:Network")

    @property
    def volumes(self) -> dict[str, Declared]:
        return self.of_type("docker:index/volume:Volume")

    @property
    def images(self) -> dict[str, Declared]:
        return self.of_type("docker:index/image:Image")

    @property
    def remote_images(self) -> dict[str, Declared]:
        return self.of_type("docker:index/remoteImage:RemoteImage")

    def container(self, name: str) -> Declared:
        declared = self.containers
        assert name in declared, f"container {name!r} not declared; declared: {sorted(declared)}"
        return declared[name]


class RecordingMocks(pulumi.runtime.Mocks):
    def __init__(self) -> None:
        self.resources: list[Declared] = []

    def new_resource(self, args: pulumi.runtime.MockResourceArgs) -> tuple[str, dict[str, Any]]:
        self.resources.append(Declared(args.typ, args.name, args.inputs))
        outputs = dict(args.inputs)
        # What the program reads back: `RemoteImage.image_id` and `Image.repo_digest`. Echoing
        # the image name makes each container's `image` input the tag Compose would use.
        if args.typ == "docker:index/remoteImage:RemoteImage":
            outputs["imageId"] = args.inputs["name"]
        if args.typ == "docker:index/image:Image":
            outputs["repoDigest"] = args.inputs["imageName"]
        return f"{args.name}-id", outputs

    def call(self, args: pulumi.runtime.MockCallArgs) -> tuple[dict[str, Any], None]:
        return {}, None


def run_program(
    config: dict[str, str], root: Path = REPO_ROOT, secret_keys: tuple[str, ...] = ()
) -> Deployment:
    """`pulumi up` of the checkout at `root` under mocks, with `config` as the stack config
    (`secret_keys`: the keys set with `--secret`)."""
    mocks = RecordingMocks()
    pulumi.runtime.set_mocks(mocks, project=PROJECT, stack="test", preview=False)
    pulumi.runtime.set_all_config(
        {f"{PROJECT}:{key}": value for key, value in config.items()},
        [f"{PROJECT}:{key}" for key in secret_keys],
    )
    settings.SETTINGS.rpc_manager.clear()
    settings.SETTINGS.outputs.clear()
    outputs: dict[str, Any] = {}

    def program() -> None:
        runpy.run_path(str(root / "infra" / "__main__.py"), run_name="__main__")

    # The mocks see resources only; the stack outputs are recorded as the program exports them.
    with patch.object(pulumi, "export", outputs.__setitem__):
        _sync_await(run_pulumi_func(program))
    return Deployment(mocks.resources, outputs)
