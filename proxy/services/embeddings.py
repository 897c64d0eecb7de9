"""Embeddings, for every dialect: checked, limited and accounted like a generation.

An embedding costs the GPU too, so it passes the same model allowlist, the same rate limit and
concurrency slot, and is audited with its prompt tokens. Ollama's `/api/embed` does the work;
each dialect writes the vectors in its own shape.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from proxy.audit.record import AuditRecord
from proxy.core.errors import UpstreamFailed
from proxy.core.security import Principal
from proxy.schemas import GenerationOptions
from proxy.services.calls import account_request, admit
from proxy.services.state import AppState
from proxy.services.validation import (
    check_embed_inputs,
    check_keep_alive,
    check_key_models,
    check_model,
)


@dataclass
class EmbedAsk:
    """One embedding request in Ollama's native terms."""

    model: str
    inputs: list[str]
    truncate: bool | None = None
    dimensions: int | None = None
    keep_alive: float | str | None = None
    options: GenerationOptions | None = None

    def payload(self) -> dict[str, Any]:
        payload: dict[str, Any] = {"model": self.model, "input": self.inputs}
        for key in ("truncate", "dimensions", "keep_alive"):
            if (value := getattr(self, key)) is not None:
                payload[key] = value
        if self.options is not None and (values := self.options.model_dump(exclude_none=True)):
            payload["options"] = values
        return payload


@dataclass
class Embeddings:
    vectors: list[list[float]]
    prompt_tokens: int
    raw: dict[str, Any]  # Ollama's answer, as sent


async def embed(state: AppState, user: Principal, ask: EmbedAsk,
                record: AuditRecord) -> Embeddings:
    """Check, admit (rate limit and slot), then ask Ollama for the vectors."""
    account_request(record, state.settings, ask.model, "\n".join(ask.inputs))
    check_model(ask.model, state.settings)
    check_key_models(ask.model, user)
    check_embed_inputs(ask.inputs, state.settings)
    check_keep_alive(ask.keep_alive, state.settings)
    meter = await admit(state, user, record)
    raw = await state.upstream.request_json("POST", "/api/embed", ask.payload(), model=ask.model)
    vectors = raw.get("embeddings") if isinstance(raw, dict) else None
    if (not isinstance(vectors, list) or len(vectors) != len(ask.inputs)
            or not all(isinstance(v, list) for v in vectors)):
        raise UpstreamFailed("upstream answered /api/embed without one vector per input")
    tokens = raw.get("prompt_eval_count")
    record.prompt_tokens = tokens if isinstance(tokens, int) else 0
    await meter.settle(record.prompt_tokens)
    duration = raw.get("total_duration")
    record.upstream_ms = duration / 1e6 if isinstance(duration, int | float) else 0.0
    return Embeddings(vectors, record.prompt_tokens, raw)
