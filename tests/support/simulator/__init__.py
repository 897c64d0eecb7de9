"""A simulated Ollama server for tests and CI, where no real model can run.

It speaks Ollama's HTTP API as Ollama's server code answers it (server/routes.go, api/types.go
in ollama/ollama) — NDJSON streams with the final counters, `/api/generate` and `/api/chat`
with tool calls, `format` (JSON or a schema) and thinking, `/api/embed` and the legacy
`/api/embeddings`, `/api/tags`, `/api/show`, `/api/ps`, `/api/pull`, `/api/delete`, Ollama's
error bodies and its 503 when the queue is full — and Ollama's OpenAI-compatible layer under
`/v1` (chat completions, completions, embeddings, models), with deterministic output,
configurable timing and faults injected through a control API under `/__sim__/`. It is a test
tool, never a production engine, and ships in no package or image of the product.

Tests predict its output with the public helpers: `completion_tokens` (text),
`thinking_tokens`, `tool_call_for` and `value_for_schema` (tool calls, structured output),
`structured_text` (the content under `format`) and `embedding_vector`.

- `create_app(config)` builds the ASGI app;
- `python -m tests.support.simulator --help` serves it (from the repository root);
- `run_simulator(**config)` runs it as a separate process for a test.

"""

from tests.support.simulator.app import create_app
from tests.support.simulator.completion import completion_tokens, thinking_tokens
from tests.support.simulator.config import SimulatorConfig
from tests.support.simulator.embeddings import embedding_vector
from tests.support.simulator.process import SimulatorProcess, run_simulator
from tests.support.simulator.replies import structured_text, tool_call_for
from tests.support.simulator.structured import value_for_schema

__all__ = [
    "SimulatorConfig",
    "SimulatorProcess",
    "completion_tokens",
    "create_app",
    "embedding_vector",
    "run_simulator",
    "structured_text",
    "thinking_tokens",
    "tool_call_for",
    "value_for_schema",
]
