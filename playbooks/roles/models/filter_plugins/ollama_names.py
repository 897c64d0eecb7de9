"""Ollama model names for the models role (unit-tested in tests/playbooks/).

Ollama names are `name:tag`, and a missing tag means `latest`, so `llama3.2` and
`llama3.2:latest` are the same model; a registry host may carry a port (`host:5000/ns/model`),
so only the last path part can hold the tag.
"""

from __future__ import annotations

from typing import Any


def ollama_model_name(name: str) -> str:
    """`llama3.2` -> `llama3.2:latest`; names that have a tag are kept."""
    name = str(name).strip()
    if ":" not in name.rsplit("/", 1)[-1]:
        name += ":latest"
    return name


def ollama_missing_models(wanted: list[str], present: list[str]) -> list[str]:
    """The wanted models Ollama does not have, in the order asked, each once."""
    have = {ollama_model_name(name) for name in present}
    missing: list[str] = []
    for name in wanted:
        full = ollama_model_name(name)
        if full not in have and full not in missing:
            missing.append(full)
    return missing


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {
            "ollama_model_name": ollama_model_name,
            "ollama_missing_models": ollama_missing_models,
        }
