"""The three dialects the proxy speaks, told apart by path, and each one's error body.

    /api/…      the proxy's own API (`/api/llm/*`), the web page's and the WebSocket's
    /v1/…       OpenAI's API (the `openai` SDK, LangChain's ChatOpenAI, chat UIs)
    /ollama/…   Ollama's own API under a prefix (the `ollama` client, ChatOllama, Open WebUI)

Every refusal, wherever it happens (the token check before the body, the body cap, validation,
a limit, an upstream failure), is written in the dialect of the path it was asked on, so that
each client raises its own exception type with the proxy's message in it.
"""

from __future__ import annotations

from typing import Any, Literal

Dialect = Literal["llm", "openai", "ollama"]

PREFIXES: tuple[tuple[str, Dialect], ...] = (
    ("/api/", "llm"),
    ("/v1/", "openai"),
    ("/ollama/", "ollama"),
)

# OpenAI's error `type` by status (its API reference and the types its SDK raises on).
_OPENAI_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    408: "timeout_error",
    409: "conflict_error",
    413: "invalid_request_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
}


def dialect_of(path: str) -> Dialect | None:
    """The dialect of an API path; None for anything else (the web page, /metrics, /docs)."""
    for prefix, dialect in PREFIXES:
        if path.startswith(prefix):
            return dialect
    return None


def is_api_path(path: str) -> bool:
    return dialect_of(path) is not None


def wire_status(dialect: Dialect | None, status: int) -> int:
    """The status a refusal is sent with. OpenAI and Ollama answer invalid input with 400;
    the proxy's own API keeps its 422, which its clients already know."""
    if status == 422 and dialect in ("openai", "ollama"):
        return 400
    return status


def error_body(dialect: Dialect | None, status: int, message: str,
               code: str | None = None, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """The JSON body of an error answer in `dialect`.

    `code` is a short machine-readable reason (an auth failure's reason, `model_not_found`,
    `rate_limit_exceeded`); `extra` are further fields of the proxy's own dialect (`detail`).
    """
    if dialect == "openai":
        kind = _OPENAI_TYPES.get(status, "api_error" if status >= 500 else "invalid_request_error")
        return {"error": {"message": message, "type": kind, "param": None, "code": code}}
    if dialect == "ollama":
        return {"error": message}
    body: dict[str, Any] = {"error": message}
    if code is not None and status == 401:
        body["reason"] = code
    body.update(extra or {})
    return body
