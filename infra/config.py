"""The stack config: its keys derived from docker-compose.yml's variables, read once.

Each variable the compose files interpolate is one key, its camelCase name (OLLAMA_MEMORY_LIMIT
is `ollamaMemoryLimit`); unset, compose's own default applies. A variable is a secret key when
compose requires it (`${NAME:?…}`), when a compose `secrets:` entry reads it, when its name says
so (…_PASSWORD, …_SECRET, …_TOKEN, …_KEY) or when the operator set it with `--secret`. Pulumi's
own keys are `gpu`, `models`, `namePrefix`, `engines` and `localEngineWeight`; any other key is
refused, so a stale or misspelt one cannot be silently ignored.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pulumi
from pulumi.config import ConfigMissingError
from pulumi.runtime.config import (
    CONFIG,
    get_config_env,
    get_config_secret_keys_env,
    is_config_secret,
)

from infra.compose import Variable, compose_files, uninterpolated, variables
from infra.engines import EngineError, upstreams_document
from proxy.core.settings import comma_list, trusted_proxy_entries

PULUMI_KEYS = ("gpu", "models", "namePrefix", "engines", "localEngineWeight")
ENGINE_FIELDS = {"name", "url", "weight", "dockerHost", "gpu", "publishAddress"}
# Keys renamed when the keys became derived from compose's variables: old name -> new name.
RENAMED = {"metricsToken": "proxyMetricsToken"}
SECRET_SUFFIXES = ("_PASSWORD", "_SECRET", "_TOKEN", "_KEY")
DEFAULT_MODELS = ("llama3.2",)
MIB = 1024**2

_MEMORY_UNITS = {"": 1, "b": 1, "k": 1024, "m": 1024**2, "g": 1024**3}
_MEMORY = re.compile(r"^\s*(\d+)\s*([bkmg]?)b?\s*$", re.IGNORECASE)
# What a secret variable is set to when compose renders the stack; the translator puts the
# Pulumi secret in its place, so compose never sees (and Pulumi's state never holds) the value.
_PLACEHOLDER = "<pulumi-secret:{}>"
PLACEHOLDER = re.compile(r"<pulumi-secret:(\w+)>")


class ConfigError(ValueError):
    """A stack config value cannot be used; the message names the key and the fix."""


def config_key(variable: str) -> str:
    """The stack config key of a compose variable: OLLAMA_MEMORY_LIMIT -> ollamaMemoryLimit."""
    first, *rest = variable.lower().split("_")
    return first + "".join(word.capitalize() for word in rest)


def placeholder(variable: str) -> str:
    return _PLACEHOLDER.format(variable)


def memory_bytes(value: str) -> int:
    """Bytes in a Compose-style size ("12g", "512m"); Compose's units are powers of 1024."""
    match = _MEMORY.match(value)
    if match is None:
        raise ConfigError(f"{value!r} is not a size such as 12g or 8192m")
    number, unit = match.groups()
    size = int(number) * _MEMORY_UNITS[unit.lower()]
    # Docker's provider takes whole MiB: anything else would not be the limit compose sets.
    if size % MIB or size == 0:
        raise ConfigError(f"{value!r} must be a positive whole number of MiB")
    return size


def trusted_proxies(value: str) -> str:
    """As given, once every entry is one the proxy accepts (its own rule): it refuses to start
    otherwise, after `pulumi up` had replaced the running proxy."""
    try:
        trusted_proxy_entries(comma_list(value))
    except ValueError as refused:
        raise ConfigError(str(refused).removeprefix("PROXY_TRUSTED_PROXIES: ")) from refused
    return value


def audit_retention_days(value: str) -> int:
    try:
        days = int(value)
    except ValueError:
        raise ConfigError(f"{value!r} is not a whole number of days") from None
    if days < 0:
        raise ConfigError(f"{days} is negative; audit rows are kept this many days, and 0 keeps "
                          "every row")
    return days


# Values the stack cannot run with, refused before anything is deployed.
VALIDATORS: dict[str, Callable[[str], object]] = {
    "OLLAMA_MEMORY_LIMIT": memory_bytes,
    "PROXY_TRUSTED_PROXIES": trusted_proxies,
    "PROXY_AUDIT_RETENTION_DAYS": audit_retention_days,
}


def check_setting(variable: str, value: str) -> None:
    """Raise ConfigError, naming the key, when the variable has a validator that refuses it."""
    validator = VALIDATORS.get(variable)
    if validator is None:
        return
    try:
        validator(value)
    except ConfigError as refused:
        raise ConfigError(f"{config_key(variable)}: {refused}") from None


@dataclass(frozen=True)
class Key:
    """One stack config key and the compose variable it sets."""

    name: str
    variable: Variable
    secret: bool


@dataclass(frozen=True)
class ComposeKeys:
    """What the compose files declare: the project name and a key per variable."""

    project: str
    keys: dict[str, Key]


def compose_keys(root: Path, files: list[Path]) -> ComposeKeys:
    found = variables(root, files)
    model = uninterpolated(root, files)
    # A compose secret read from the environment is required by `up` whether or not a `${…}`
    # names it too.
    sourced = {s["environment"] for s in model.get("secrets", {}).values() if "environment" in s}
    for name in sourced - set(found):
        found[name] = Variable(name, "", required=True)
    keys = {
        config_key(name): Key(
            config_key(name),
            variable,
            variable.required or name in sourced or name.endswith(SECRET_SUFFIXES),
        )
        for name, variable in sorted(found.items())
    }
    return ComposeKeys(str(model["name"]), keys)


@dataclass(frozen=True)
class EngineConfig:
    """One entry of `engines`: an engine host the proxy routes to, deployed by this program on
    its Docker host when `docker_host` is set (else deployed some other way, e.g. Ansible)."""

    name: str
    url: str
    weight: float
    docker_host: str | None
    gpu: bool
    publish_address: str | None

    @property
    def port(self) -> int:
        """The published port: the url's, else Ollama's 11434."""
        return urlsplit(self.url).port or 11434

    def upstream(self) -> dict[str, Any]:
        return {"name": self.name, "url": self.url, "weight": self.weight}


def engines_config(value: Any) -> tuple[EngineConfig, ...]:
    """The `engines` key: a list of {name, url, weight?, dockerHost?, gpu?, publishAddress?}."""
    example = ('e.g. [{"name": "gpu-3", "url": "http://10.0.0.13:11434", '
               '"dockerHost": "ssh://deploy@gpu-3"}]')
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(e, dict) for e in value):
        raise ConfigError(f"engines: expected a list of engines, {example}")
    engines = []
    for number, entry in enumerate(value, 1):
        unknown = sorted(set(entry) - ENGINE_FIELDS)
        if unknown:
            raise ConfigError(f"engines[{number}]: unknown fields {', '.join(unknown)}; the "
                              f"fields are {', '.join(sorted(ENGINE_FIELDS))}")
        if not isinstance(entry.get("gpu", False), bool):
            raise ConfigError(f"engines[{number}]: gpu must be true or false")
        engines.append(EngineConfig(
            name=str(entry.get("name", "")), url=str(entry.get("url", "")),
            weight=entry.get("weight", 1), docker_host=entry.get("dockerHost"),
            gpu=entry.get("gpu", False), publish_address=entry.get("publishAddress")))
    return tuple(engines)


@dataclass(frozen=True)
class StackConfig:
    name_prefix: str
    gpu: bool
    models: tuple[str, ...]
    # The compose files Pulumi deploys (the GPU override when `gpu`).
    files: tuple[Path, ...]
    # Compose variable -> value, for the keys set in the stack config (the rest: compose's
    # defaults). Plain values only; the secret ones are in `secrets`.
    settings: dict[str, str]
    secrets: dict[str, pulumi.Output[str]]
    # The engine hosts the proxy routes to besides the stack's own Ollama.
    engines: tuple[EngineConfig, ...] = ()

    def engine_environment(self, engine: EngineConfig) -> dict[str, str]:
        """The variables docker-compose.engine.yml renders with for `engine`: the stack's Ollama
        settings, its port and address."""
        ollama = {k: v for k, v in self.settings.items() if k.startswith("OLLAMA_")}
        address = {"ENGINE_PUBLISH_ADDRESS": engine.publish_address} if engine.publish_address \
            else {}
        return {**ollama, "ENGINE_PORT": str(engine.port), **address}

    def compose_environment(self) -> dict[str, str]:
        """The variables compose renders the stack with: secrets as placeholders."""
        return {**self.settings, **{name: placeholder(name) for name in self.secrets}}


def _set_keys(config: pulumi.Config) -> set[str]:
    namespace = f"{config.name}:"
    every = {*CONFIG.get(), *get_config_env()}
    return {key.removeprefix(namespace) for key in every if key.startswith(namespace)}


def _refuse_unknown(config: pulumi.Config, keys: dict[str, Key]) -> None:
    unknown = sorted(_set_keys(config) - set(keys) - set(PULUMI_KEYS) - set(RENAMED))
    if not unknown:
        return
    hints = [
        f"{key} (images are pinned in docker-compose.yml only: change the tag there)"
        if key.endswith("Image")
        else key
        for key in unknown
    ]
    raise ConfigError(
        f"unknown stack config keys: {', '.join(hints)}. The keys are the camelCase names of "
        f"docker-compose.yml's variables ({', '.join(sorted(keys))}) and "
        f"{', '.join(PULUMI_KEYS)}"
    )


def _value(config: pulumi.Config, key: str) -> str | None:
    value = config.get(key)
    if value is not None:
        return value
    for old, new in RENAMED.items():
        if new == key and (value := config.get(old)) is not None:
            pulumi.log.warn(
                f"stack config key {old!r} is deprecated: it is now {new!r}, the camelCase of "
                "its docker-compose.yml variable. Set the new key (`pulumi config set --secret "
                f"{new} …`) and remove the old one (`pulumi config rm {old}`)"
            )
            return value
    return None


def load_config(root: Path) -> StackConfig:
    config = pulumi.Config()
    gpu = config.get_bool("gpu") or False
    files = compose_files(root, gpu)
    declared = compose_keys(root, files)
    _refuse_unknown(config, declared.keys)
    models = config.get_object("models")
    if models is None:
        models = list(DEFAULT_MODELS)
    if not isinstance(models, list) or not all(isinstance(m, str) and m for m in models):
        raise ConfigError('models: expected a list of model names, e.g. ["llama3.2", "mistral"]')

    marked_secret = set(get_config_secret_keys_env())
    settings: dict[str, str] = {}
    secrets: dict[str, pulumi.Output[str]] = {}
    for key in declared.keys.values():
        name = key.variable.name
        value = _value(config, key.name)
        full_key = config.full_key(key.name)
        secret = key.secret or is_config_secret(full_key) or full_key in marked_secret
        if not value and key.variable.required:
            # As compose's `${NAME:?…}`: empty is missing.
            raise ConfigMissingError(full_key, secret=secret)
        if value is not None and secret:
            secrets[name] = pulumi.Output.secret(value)
        elif value is not None:
            settings[name] = value
        if not secret:
            # Compose applies its default to an unset or empty variable (`${NAME:-default}`).
            check_setting(name, value or key.variable.default)
    engines = engines_config(config.get_object("engines"))
    if engines:
        if settings.get("PROXY_UPSTREAMS"):
            raise ConfigError("engines and proxyUpstreams are both set: `engines` builds "
                              "PROXY_UPSTREAMS; set one of them")
        local_weight = config.get_float("localEngineWeight")
        try:
            settings["PROXY_UPSTREAMS"] = upstreams_document(
                [e.upstream() for e in engines], 1 if local_weight is None else local_weight)
        except EngineError as refused:
            raise ConfigError(f"engines: {refused}") from None
    return StackConfig(
        name_prefix=config.get("namePrefix") or declared.project,
        gpu=gpu,
        models=tuple(models),
        files=tuple(files),
        settings=settings,
        secrets=secrets,
        engines=engines,
    )
