"""`/api/embed` and the legacy `/api/embeddings`, as Ollama's EmbedHandler and
EmbeddingsHandler (server/routes.go) answer them.

- `/api/embed`: `input` is a string or a list of strings; an empty string or list only loads
  the model (`{"model", "embeddings": []}`); any other type is `invalid input type`. Each input
  longer than the context (`options.num_ctx`, default 4096, capped by the model's context
  length; a word is a token here) is cut to fit, or, with `truncate: false`, refused with a
  400. Vectors are normalized, and `dimensions` (when between 1 and the model's length) keeps
  the first values and normalizes again. A missing model name is `model '' not found` (404).
- `/api/embeddings`: `prompt` → `{"embedding": [...]}`, not normalized; an empty prompt only
  loads the model; a missing model name is `model is required` (400).
Neither route checks a capability: Ollama schedules them with none, so a completion model
embeds too. An unknown model is `model "X" not found, try pulling it first` (404), the text
of Ollama's handleScheduleError. Faults do not apply: they stand for failed generations.
"""

from __future__ import annotations

import time
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tests.support.simulator.catalog import DEFAULT_NUM_CTX, ModelSpec
from tests.support.simulator.completion import count_tokens
from tests.support.simulator.embeddings import embedding_vector, legacy_embedding
from tests.support.simulator.ollama_routes import json_reply, sim_of
from tests.support.simulator.payload import (
    ApiError,
    Fields,
    int_option,
    keep_alive_seconds,
    read_body,
)
from tests.support.simulator.state import SimulatorState

INPUT_TOO_LONG = "the input length exceeds the context length"


def _scheduled_model(sim: SimulatorState, model: str, keep_alive: float) -> ModelSpec:
    spec = sim.local_model(model)
    if spec is None:
        raise ApiError(404, f'model "{model}" not found, try pulling it first')
    sim.mark_loaded(spec, keep_alive)
    return spec


def _inputs(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value] if value else []
    if isinstance(value, list):
        if not all(isinstance(v, str) for v in value):
            raise ApiError(400, "invalid input type")
        return list(value)
    if value is not None:
        raise ApiError(400, "invalid input type")
    return []


def _fit(text: str, limit: int, truncate: bool) -> str:
    words = text.split()
    if len(words) <= limit:
        return text
    if not truncate:
        raise ApiError(400, INPUT_TOO_LONG)
    return " ".join(words[:limit])


async def embed(request: Request) -> Response:
    started = time.perf_counter_ns()
    sim = sim_of(request)
    fields = Fields(await read_body(request, sim, "EmbedRequest"), "EmbedRequest")
    model = fields.string("model")
    truncate = fields.flag("truncate") is not False
    dimensions = fields.raw("dimensions")
    if dimensions is not None and (isinstance(dimensions, bool) or not isinstance(dimensions, int)):
        raise fields.wrong("dimensions", dimensions, "int")
    options = fields.mapping("options")
    keep_alive = keep_alive_seconds(fields.raw("keep_alive"))
    if not model:
        raise ApiError(404, "model '' not found")
    inputs = _inputs(fields.raw("input"))
    spec = _scheduled_model(sim, model, keep_alive)
    loaded = time.perf_counter_ns()
    if not inputs:
        return json_reply({"model": model, "embeddings": []})

    num_ctx = int_option(options, "num_ctx")
    limit = min(num_ctx if num_ctx and num_ctx > 0 else DEFAULT_NUM_CTX, spec.context_length)
    texts = [_fit(text, limit, truncate) for text in inputs]
    vectors = [embedding_vector(spec.name, text, dimensions) for text in texts]
    return json_reply(
        {
            "model": model,
            "embeddings": vectors,
            "total_duration": max(1, time.perf_counter_ns() - started),
            "load_duration": max(1, loaded - started),
            # A tokenizer adds at least a start token, so even "" costs one.
            "prompt_eval_count": sum(max(1, count_tokens(text)) for text in texts),
        }
    )


async def embeddings(request: Request) -> Response:
    sim = sim_of(request)
    fields = Fields(await read_body(request, sim, "EmbeddingRequest"), "EmbeddingRequest")
    model = fields.string("model")
    prompt = fields.string("prompt")
    fields.mapping("options")
    keep_alive = keep_alive_seconds(fields.raw("keep_alive"))
    if not model:
        raise ApiError(400, "model is required")
    spec = _scheduled_model(sim, model, keep_alive)
    if not prompt:
        return json_reply({"embedding": []})
    return json_reply({"embedding": legacy_embedding(spec.name, prompt)})


ROUTES = [
    Route("/api/embed", embed, methods=["POST"]),
    Route("/api/embeddings", embeddings, methods=["POST"]),
]
