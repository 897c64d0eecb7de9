"""Model names as Ollama reads them (`llama3.2` is `llama3.2:latest`), and the ones it has."""

from __future__ import annotations

from dataclasses import dataclass, field


def full_model_name(name: str) -> str:
    return name if ":" in name.rsplit("/", 1)[-1] else f"{name}:latest"


@dataclass
class KnownModels:
    """The model names upstream had at the last look: the bound on the `model` label."""

    names: set[str] = field(default_factory=set)

    def update(self, names: list[str]) -> None:
        self.names = {full_model_name(n) for n in names}

    def contains(self, name: str) -> bool:
        return full_model_name(name) in self.names
