"""The variables the deployed compose files read, so that the role's `.env` follows them.

Each `${NAME}` of the compose files has a role variable, `stack_` and the name in lower case
(OLLAMA_MEMORY_LIMIT: `stack_ollama_memory_limit`): a variable added to docker-compose.yml can be
set from the inventory at once, and one the compose files require (`${NAME:?message}`) stops the
role when it has no value. Only the files' string values are read (compose ignores comments), in
compose's syntax: `${NAME}`, `${NAME:-default}`, `${NAME-default}`, `${NAME:?message}`,
`${NAME?message}`, `$NAME`; `$$` is a literal dollar.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from typing import Any

import yaml

_VARIABLE = re.compile(r"\$(?:\$|\{(\w+)(?:(:?[-?+])([^}]*))?\}|(\w+))")


class _AnyTagLoader(yaml.SafeLoader):
    """Reads compose's own tags (`!reset`, `!override`) as plain values."""


_AnyTagLoader.add_multi_constructor(
    "!",
    lambda loader, _tag, node: loader.construct_scalar(node)
    if isinstance(node, yaml.ScalarNode)
    else loader.construct_sequence(node)
    if isinstance(node, yaml.SequenceNode)
    else loader.construct_mapping(node),
)


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _strings(key)
            yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)


def stack_compose_variables(texts: list[str]) -> dict[str, dict[str, Any]]:
    """Compose variable -> {variable, name (its role variable), required, default, message}."""
    found: dict[str, dict[str, Any]] = {}
    for text in texts:
        for string in _strings(yaml.load(text, Loader=_AnyTagLoader)):
            for match in _VARIABLE.finditer(string):
                braced, operator, argument, bare = match.groups()
                name = braced or bare
                if not name:
                    continue  # `$$`
                entry = found.setdefault(name, {
                    "variable": name, "name": f"stack_{name.lower()}", "required": False,
                    "default": "", "message": "",
                })  # fmt: skip
                if operator and "?" in operator:
                    entry.update(required=True, message=argument or "")
                elif operator and "-" in operator and not entry["default"]:
                    entry["default"] = argument or ""
    return found


def stack_env(
    variables: Mapping[str, Mapping[str, Any]],
    given: Mapping[str, Any],
    renamed: Mapping[str, str],
    extra: Mapping[str, Any],
) -> dict[str, str]:
    """The `.env` lines: each compose variable whose role variable is in `given` (or whose old
    name in `renamed` is), then `extra` (stack_env_extra), which wins."""
    values = dict(given)
    for old, new in renamed.items():
        if old in values and new not in values:
            values[new] = values[old]
    env = {
        name: str(values[variable["name"]])
        for name, variable in variables.items()
        if variable["name"] in values
    }
    env.update({str(name): str(value) for name, value in extra.items()})
    return env


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {"stack_compose_variables": stack_compose_variables, "stack_env": stack_env}
