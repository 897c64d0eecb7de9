"""The models users may see: what Ollama has, narrowed to PROXY_MODEL_ALLOWLIST.

One function for every dialect's model list (`/api/llm/models`, `/v1/models`,
`/ollama/api/tags`, `/ollama/api/ps`), so none of them can show a model another refuses.
"""

from __future__ import annotations

from typing import Any

from proxy.services.state import AppState
from proxy.services.validation import check_model, is_allowed


def _name(entry: dict[str, Any]) -> str:
    return str(entry.get("name") or entry.get("model") or "")


async def allowed_tags(state: AppState) -> list[dict[str, Any]]:
    """Ollama's `/api/tags` entries of the models users may use (and the names noted for the
    metrics' model label)."""
    tags = await state.upstream.tags()
    state.known_models.update([_name(m) for m in tags])
    return [m for m in tags if is_allowed(_name(m), state.settings)]


async def allowed_running(state: AppState) -> list[dict[str, Any]]:
    """Ollama's `/api/ps` entries (models loaded now) of the models users may use."""
    data = await state.upstream.request_json("GET", "/api/ps")
    models = data.get("models", []) if isinstance(data, dict) else []
    return [m for m in models if isinstance(m, dict) and is_allowed(_name(m), state.settings)]


async def show(state: AppState, model: str) -> dict[str, Any]:
    """Ollama's `/api/show` for a model users may use (403 for any other)."""
    check_model(model, state.settings)
    data = await state.upstream.request_json("POST", "/api/show", {"model": model}, model=model)
    return data if isinstance(data, dict) else {}
