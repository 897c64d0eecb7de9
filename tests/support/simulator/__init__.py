"""A simulated Ollama server for tests and CI, where no real model can run.

It speaks Ollama's HTTP API as Ollama documents it (docs/api.md in ollama/ollama) — NDJSON
streams with the final counters, `/api/tags`, `/api/show`, `/api/ps`, `/api/pull`,
`/api/delete`, Ollama's error bodies and its 503 when the queue is full — with deterministic
output, configurable timing and faults injected through a control API under `/__sim__/`. It is a
test tool, never a production engine, and ships in no package or image of the product.

- `create_app(config)` builds the ASGI app;
- `python -m tests.support.simulator --help` serves it (from the repository root);
- `run_simulator(**config)` runs it as a separate process for a test.

"""

from tests.support.simulator.app import create_app
from tests.support.simulator.completion import completion_tokens
from tests.support.simulator.config import SimulatorConfig
from tests.support.simulator.process import SimulatorProcess, run_simulator

__all__ = [
    "SimulatorConfig",
    "SimulatorProcess",
    "completion_tokens",
    "create_app",
    "run_simulator",
]
