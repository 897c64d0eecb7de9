"""Everything the simulator remembers between requests: shelf, loaded models, faults, stats.

One `SimulatorState` per app. All of it lives on the event loop's thread, so plain attributes
are enough — no locks.
"""

from __future__ import annotations

import copy
import math
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from tests.support.simulator.catalog import ModelSpec, normalize_name, spec_for
from tests.support.simulator.config import SimulatorConfig
from tests.support.simulator.scheduler import SlotGate

FAULT_MODES = ("none", "hang", "error500", "busy503", "disconnect", "midstream_error")
"""Faults applied to generate/chat requests; `refuse` is a listener fault, handled apart."""

DEFAULT_FAULT_MESSAGES = {
    "error500": "llama runner process has terminated: signal: killed",
    "midstream_error": "an error was encountered while running the model: unexpected EOF",
}

# What `/api/ps` shows for keep_alive < 0: Ollama's "forever" is time.Now() + MaxInt64 ns.
_FOREVER = timedelta(days=106_751)


def ollama_timestamp(moment: datetime | None = None) -> str:
    """RFC 3339 with sub-second digits and `Z`, as Go's time.Time marshals in UTC."""
    moment = moment or datetime.now(UTC)
    return moment.isoformat(timespec="microseconds").replace("+00:00", "Z")


@dataclass
class FaultPlan:
    """The fault to apply to the next `remaining` generate/chat requests (None: until reset)."""

    mode: str = "none"
    remaining: int | None = None
    message: str | None = None

    def take(self) -> tuple[str, str]:
        """Consume one application of the fault; return its mode and error text."""
        mode = self.mode
        message = self.message or DEFAULT_FAULT_MESSAGES.get(mode, "simulated failure")
        if mode != "none" and self.remaining is not None:
            self.remaining -= 1
            if self.remaining <= 0:
                self.mode, self.remaining, self.message = "none", None, None
        return mode, message

    def as_dict(self) -> dict[str, Any]:
        return {"mode": self.mode, "count": self.remaining, "message": self.message}


@dataclass
class Stats:
    """What a test wants to know about the traffic the simulator has seen."""

    requests: Counter[str] = field(default_factory=Counter)
    completed: int = 0
    cancelled: int = 0
    errored: int = 0
    rejected: int = 0
    last_body: dict[str, Any] = field(default_factory=dict)
    last_headers: dict[str, dict[str, str]] = field(default_factory=dict)
    # By path, each client connection its requests came on (address and port): a client that
    # reuses its connections (keep-alive) shows few, one that opens one per request as many.
    peers: dict[str, set[str]] = field(default_factory=dict)

    def record_request(self, path: str, headers: list[tuple[bytes, bytes]],
                       client: tuple[str, int] | None = None) -> None:
        self.requests[path] += 1
        if client is not None:
            self.peers.setdefault(path, set()).add(f"{client[0]}:{client[1]}")
        seen: dict[str, str] = {}
        for raw_name, raw_value in headers:
            name, value = raw_name.decode("latin-1").lower(), raw_value.decode("latin-1")
            seen[name] = f"{seen[name]}, {value}" if name in seen else value
        self.last_headers[path] = seen

    def record_outcome(self, outcome: str) -> None:
        """Count a generation's end: completed, cancelled, errored or rejected."""
        setattr(self, outcome, getattr(self, outcome) + 1)


class SimulatorState:
    """The shelf of local models, what is loaded, the slot gate, faults and stats."""

    def __init__(self, config: SimulatorConfig) -> None:
        # Copies: pulls and deletes edit `config.models` in place, and reset must undo them.
        self.initial_config = copy.deepcopy(config)
        self.config = copy.deepcopy(config)
        self.gate = SlotGate(config.num_parallel, config.max_queue)
        self.faults = FaultPlan()
        self.stats = Stats()
        self.modified_at: dict[str, str] = {}
        self.loaded: dict[str, float] = {}  # name -> expiry as a POSIX timestamp (inf: never)
        self._sync_shelf()

    def apply_config(self, config: SimulatorConfig) -> None:
        self.config = copy.deepcopy(config)
        self.gate.resize(config.num_parallel, config.max_queue)
        self._sync_shelf()

    def reset(self, *, config: bool = False) -> None:
        self.faults = FaultPlan()
        self.stats = Stats()
        if config:
            self.loaded.clear()
            self.apply_config(self.initial_config)

    def _sync_shelf(self) -> None:
        now = ollama_timestamp()
        self.modified_at = {name: self.modified_at.get(name, now) for name in self.config.models}
        for name in list(self.loaded):
            if name not in self.modified_at:
                del self.loaded[name]

    # -- the shelf -------------------------------------------------------------------------

    def local_model(self, name: str) -> ModelSpec | None:
        normalized = normalize_name(name)
        return spec_for(normalized) if normalized in self.modified_at else None

    def add_model(self, name: str) -> None:
        normalized = normalize_name(name)
        self.modified_at[normalized] = ollama_timestamp()
        if normalized not in self.config.models:
            self.config.models.append(normalized)

    def remove_model(self, name: str) -> bool:
        normalized = normalize_name(name)
        if normalized not in self.modified_at:
            return False
        del self.modified_at[normalized]
        self.config.models.remove(normalized)
        self.loaded.pop(normalized, None)
        return True

    # -- what is loaded (/api/ps) -----------------------------------------------------------

    def mark_loaded(self, spec: ModelSpec, keep_alive_seconds: float) -> None:
        if keep_alive_seconds == 0:
            self.loaded.pop(spec.name, None)
            return
        now = datetime.now(UTC).timestamp()
        self.loaded[spec.name] = (
            math.inf if math.isinf(keep_alive_seconds) else (now + keep_alive_seconds)
        )

    def running_models(self) -> list[tuple[ModelSpec, str]]:
        """Loaded models that have not expired, with their `expires_at` text."""
        now = datetime.now(UTC)
        running = []
        for name, expiry in list(self.loaded.items()):
            if expiry <= now.timestamp():
                del self.loaded[name]
                continue
            expires = now + _FOREVER if math.isinf(expiry) else datetime.fromtimestamp(expiry, UTC)
            running.append((spec_for(name), ollama_timestamp(expires)))
        return running
