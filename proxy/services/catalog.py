"""The models a caller may see: what Ollama has, narrowed to PROXY_MODEL_ALLOWLIST and, for a
request made with an API key that has a model allowlist, to that too.

One function for every dialect's model list (`/api/llm/models`, `/v1/models`,
`/ollama/api/tags`, `/ollama/api/ps`), so none of them can show a model another refuses.
"""

from __future__ import annotations

from typing import Any

from proxy.core.errors import ProxyError
from proxy.core.security import Principal
from proxy.services.state import AppState
from proxy.services.validation import check_key_models, check_model, is_allowed


def _name(entry: dict[str, Any]) -> str:
    return str(entry.get("name") or entry.get("model") or "")


def _usable(name: str, state: AppState, caller: Principal) -> bool:
    if not is_allowed(name, state.settings):
        return False
    try:
        check_key_models(name, caller)
    except ProxyError:
        return False
    return True


async def allowed_tags(state: AppState, caller: Principal) -> list[dict[str, Any]]:
    """Ollama's `/api/tags` entries of the models users may use (and the names noted for the
    metrics' model label)."""
    tags = await state.upstream.tags()
    state.known_models.update([_name(m) for m in tags])
    return [m for m in tags if _usable(_name(m), state, caller)]


async def allowed_running(state: AppState, caller: Principal) -> list[dict[str, Any]]:
    """Ollama's `/api/ps` entries (models loaded now) of the models users may use."""
    data = await state.upstream.request_json("GET", "/api/ps")
    models = data.get("models", []) if isinstance(data, dict) else []
    return [m for m in models if isinstance(m, dict) and _usable(_name(m), state, caller)]


async def show(state: AppState, model: str, caller: Principal) -> dict[str, Any]:
    """Ollama's `/api/show` for a model the caller may use (403 for any other)."""
    check_model(model, state.settings)
    check_key_models(model, caller)
    data = await state.upstream.request_json("POST", "/api/show", {"model": model}, model=model)
    return data if isinstance(data, dict) else {}
