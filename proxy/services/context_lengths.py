"""The context length each model reports, for the cap on a caller's `num_ctx`.

Every new `num_ctx` makes Ollama reload the model with a KV cache of that size, so a caller who
may pick any value can evict other users' models and fill GPU memory. `PROXY_MAX_NUM_CTX` sets
the cap; unset, the cap is the model's own context length as Ollama reports it in `/api/show`
(`model_info["<architecture>.context_length"]`), or `DEFAULT_NUM_CTX_CAP` for a model that
reports none. A model's answer is remembered for `REMEMBER_SECONDS`, so the look-up costs one
upstream call per model, not one per request; requests without `num_ctx` never look.
"""

from __future__ import annotations

import time
from typing import Any

from proxy.upstream.router import Engine

DEFAULT_NUM_CTX_CAP = 8192
REMEMBER_SECONDS = 600.0


def reported_context_length(show: Any) -> int | None:
    """The context length in an `/api/show` answer, or None if it names none."""
    info = show.get("model_info") if isinstance(show, dict) else None
    if not isinstance(info, dict):
        return None
    for key, value in info.items():
        if key.endswith(".context_length") and isinstance(value, int) and value > 0:
            return value
    return None


class ContextLengths:
    def __init__(self) -> None:
        self._known: dict[str, tuple[float, int | None]] = {}

    async def of(self, upstream: Engine, model: str) -> int | None:
        """The model's own context length; ModelNotFound (404) if upstream has no such model."""
        known = self._known.get(model)
        if known is not None and known[0] > time.monotonic():
            return known[1]
        show = await upstream.request_json("POST", "/api/show", {"model": model}, model=model)
        length = reported_context_length(show)
        self._known[model] = (time.monotonic() + REMEMBER_SECONDS, length)
        return length
