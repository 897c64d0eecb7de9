"""A simulated Ollama server for tests and CI, where no real model can run.

It speaks Ollama's HTTP API as `shared/ollama-api.md` describes it — NDJSON streams with the
final counters, `/api/tags`, `/api/show`, `/api/ps`, `/api/pull`, `/api/delete`, Ollama's
error bodies and its 503 when the queue is full — with deterministic output, configurable
timing and faults injected through a control API under `/__sim__/`. It is a test tool, never a
production engine.

- `create_app(config)` builds the ASGI app;
- `python -m proxy.simulator --help` serves it;
- `run_simulator(**config)` runs it as a separate process for a test.
"""

from proxy.simulator.app import create_app
from proxy.simulator.completion import completion_tokens
from proxy.simulator.config import SimulatorConfig
from proxy.simulator.process import SimulatorProcess, run_simulator

__all__ = [
    "SimulatorConfig",
    "SimulatorProcess",
    "completion_tokens",
    "create_app",
    "run_simulator",
]
