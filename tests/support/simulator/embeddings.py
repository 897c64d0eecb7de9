"""Deterministic embedding vectors, shaped like the float32 vectors Ollama returns.

A vector is a pure function of the model (its normalized name) and the text, seeded through
sha256, so a test can compute the vector the simulator will return with `embedding_vector`.
Like Ollama's EmbedHandler (server/routes.go) the vector is L2-normalized, and `dimensions`
keeps the first N values and normalizes again.

Ollama's vectors are `[]float32`, which Go's encoder writes with the fewest digits that read
back as the same float32 (`0.0123456`, not `0.012345600128173828`). The values here are chosen
the same way: each is the shortest decimal of a float32, so JSON carries the same digits, and a
client decoding the base64 form of `/v1/embeddings` gets the same float32 values.
"""

from __future__ import annotations

import base64
import math
import struct
from collections.abc import Sequence

from tests.support.simulator.catalog import normalize_name, spec_for
from tests.support.simulator.completion import seeded_random


def _float32(value: float) -> float:
    return float(struct.unpack("<f", struct.pack("<f", value))[0])


def shortest_float32(value: float) -> float:
    """`value` rounded to float32, as the shortest decimal that reads back as that float32."""
    exact = _float32(value)
    for digits in range(1, 10):
        candidate = float(f"{exact:.{digits}g}")
        if _float32(candidate) == exact:
            return candidate
    return exact


def _normalized(vector: Sequence[float]) -> list[float]:
    norm = 1.0 / max(math.sqrt(sum(v * v for v in vector)), 1e-12)
    return [v * norm for v in vector]


def _model_output(model: str, text: str) -> list[float]:
    name = normalize_name(model)
    rng = seeded_random("embedding", name, text)
    return [rng.gauss(0.0, 1.0) for _ in range(spec_for(name).embedding_length)]


def embedding_vector(model: str, text: str, dimensions: int | None = None) -> list[float]:
    """The vector `/api/embed` returns for `text` on `model` (JSON form).

    Its length is the model's `embedding_length`, or `dimensions` when that is between 1 and
    the model's length (anything else is ignored, as Ollama ignores it).
    """
    vector = _normalized(_model_output(model, text))
    if dimensions is not None and 0 < dimensions < len(vector):
        vector = _normalized(vector[:dimensions])
    return [shortest_float32(v) for v in vector]


def legacy_embedding(model: str, text: str) -> list[float]:
    """The vector the legacy `/api/embeddings` returns: the model's output as it comes, not
    normalized, each float32 widened to float64 (Go's `float64(v)`), so JSON shows the long
    decimal of the float32 (`0.10000000149011612`)."""
    return [_float32(v) for v in _model_output(model, text)]


def float32_base64(vector: Sequence[float]) -> str:
    """`vector` as little-endian float32 bytes in base64: `/v1/embeddings`' `base64` format."""
    return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()
