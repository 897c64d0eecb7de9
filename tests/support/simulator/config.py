"""The simulator's tunable behaviour: timing, shelf of models, registry, concurrency.

One dataclass is shared by the CLI (`python -m tests.support.simulator`), the `SIM_*` environment
variables, the `POST /__sim__/config` control call and `run_simulator(**config)`, so each knob
has exactly one name and one validation rule wherever it is set.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from tests.support.simulator.catalog import DEFAULT_MODELS, DEFAULT_REGISTRY, normalize_name


class ConfigError(ValueError):
    """A setting has the wrong type or an out-of-range value."""


@dataclass
class SimulatorConfig:
    """How the simulated Ollama behaves. Defaults give quick, realistic-looking streams."""

    first_token_delay: float = 0.05
    """Seconds between the slot being granted and the first token (load + prompt eval)."""
    tokens_per_second: float = 50.0
    """Generation rate after the first token; `eval_duration` reports the rate really achieved."""
    models: list[str] = field(default_factory=lambda: list(DEFAULT_MODELS))
    """Models present locally (`/api/tags`); generate/chat/show answer 404 for others."""
    registry: list[str] = field(default_factory=lambda: list(DEFAULT_REGISTRY))
    """Models `/api/pull` can fetch; any other name fails the way a missing manifest does."""
    version: str = "0.33.0"
    num_parallel: int = 4
    """Generations running at once (OLLAMA_NUM_PARALLEL)."""
    max_queue: int = 512
    """Generations allowed to wait for a slot before 503 (OLLAMA_MAX_QUEUE)."""
    pull_duration: float = 0.5
    """Seconds a successful pull takes from `pulling manifest` to `success`."""
    gpu: bool = True
    """Whether `/api/ps` reports the loaded models in VRAM (`size_vram == size`)."""
    reply_tokens: int = 0
    """Tokens in every plain reply (before `num_predict` cuts it); 0: 20–40, by the prompt."""

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Normalize model names and raise `ConfigError` for values Ollama could not have."""
        for name in ("first_token_delay", "pull_duration"):
            value = getattr(self, name)
            if not _is_number(value) or value < 0:
                raise ConfigError(f"{name} must be a number >= 0, got {value!r}")
        if not _is_number(self.tokens_per_second) or self.tokens_per_second <= 0:
            raise ConfigError(f"tokens_per_second must be > 0, got {self.tokens_per_second!r}")
        if not _is_int(self.num_parallel) or self.num_parallel < 1:
            raise ConfigError(f"num_parallel must be an integer >= 1, got {self.num_parallel!r}")
        if not _is_int(self.reply_tokens) or self.reply_tokens < 0:
            raise ConfigError(f"reply_tokens must be an integer >= 0, got {self.reply_tokens!r}")
        if not _is_int(self.max_queue) or self.max_queue < 0:
            raise ConfigError(f"max_queue must be an integer >= 0, got {self.max_queue!r}")
        if not isinstance(self.version, str) or not self.version:
            raise ConfigError(f"version must be a non-empty string, got {self.version!r}")
        if not isinstance(self.gpu, bool):
            raise ConfigError(f"gpu must be a boolean, got {self.gpu!r}")
        self.models = _name_list("models", self.models)
        self.registry = _name_list("registry", self.registry)

    def updated(self, changes: dict[str, Any]) -> SimulatorConfig:
        """Return a validated copy with `changes` applied; unknown keys are an error."""
        known = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(set(changes) - known)
        if unknown:
            raise ConfigError(f"unknown setting(s): {', '.join(unknown)}")
        try:
            return dataclasses.replace(self, **changes)
        except TypeError as exc:
            raise ConfigError(str(exc)) from exc

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _is_number(value: object) -> bool:
    # bool is an int subclass; `"tokens_per_second": true` is a mistake, not a rate of 1.
    return isinstance(value, int | float) and not isinstance(value, bool)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _name_list(setting: str, value: object) -> list[str]:
    if isinstance(value, str):
        value = [part for part in value.split(",") if part.strip()]
    if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"{setting} must be a list of model names, got {value!r}")
    names: list[str] = []
    for raw in value:
        name = normalize_name(raw)
        if not name:
            raise ConfigError(f"{setting} contains an empty model name")
        if name not in names:
            names.append(name)
    return names
