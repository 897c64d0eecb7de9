"""A thin async client for Ollama's HTTP API on one shared connection pool.

Only the proxy's own request body goes upstream: the client's headers (Authorization, cookies)
are never copied, because the client is built with no default headers and every call passes an
explicit JSON payload.
"""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator
from contextlib import aclosing
from typing import Any

import httpx

from proxy.core.errors import UpstreamFailed
from proxy.core.settings import Settings
from proxy.upstream.http import (
    RelayClient,
    StreamTimer,
    engine_client,
    json_request,
    read_to_end,
    streamed_lines,
    whole_answer,
)


class OllamaClient:
    kind = "ollama"

    def __init__(self, settings: Settings, transport: httpx.AsyncBaseTransport | None = None,
                 base_url: str | None = None):
        self.base_url = (base_url or settings.ollama_url).rstrip("/")
        self._settings = settings
        self._http = engine_client(settings, self.base_url, transport=transport)
        self._relay = RelayClient(settings, self.base_url)

    async def aclose(self) -> None:
        await self._http.aclose()
        await self._relay.aclose()

    async def request_json(
        self, method: str, path: str, payload: dict[str, Any] | None = None,
        model: str | None = None,
    ) -> Any:
        """One request, one JSON (or empty) answer; every failure raised as an UpstreamError."""
        return await json_request(self._http, method, path, payload, model)

    async def stream_lines(
        self, path: str, payload: dict[str, Any], model: str | None
    ) -> AsyncGenerator[dict[str, Any]]:
        """POST and yield each NDJSON object as it arrives, without buffering the answer.

        A mid-stream `{"error": …}` line (Ollama keeps status 200 once output has started) is
        raised as UpstreamFailed. The first object must come within OLLAMA_FIRST_TOKEN_TIMEOUT,
        each later one within OLLAMA_READ_TIMEOUT of the one before (UpstreamTimeout). Closing
        this generator closes the upstream connection, which is how a client disconnect
        cancels the generation in Ollama.
        """
        timer = StreamTimer(self._settings)
        async with aclosing(streamed_lines(self._relay, path, payload, model, timer)) as lines:
            async for line in lines:
                if not line.strip():
                    continue
                try:
                    obj = json.loads(line)
                except ValueError as exc:
                    raise UpstreamFailed("upstream sent a line that is not JSON") from exc
                if not isinstance(obj, dict):
                    raise UpstreamFailed("upstream sent a line that is not a JSON object")
                if "error" in obj:
                    raise UpstreamFailed(f"upstream failed mid-stream: {obj['error']}")
                timer.started()
                if obj.get("done") is True:
                    # The caller stops at the final object; the body ends right after it.
                    await read_to_end(lines)
                yield obj

    async def complete(self, path: str, payload: dict[str, Any], model: str | None
                       ) -> dict[str, Any]:
        """POST a generation with `stream: false`: Ollama's final object, holding the whole
        answer and its counters."""
        answer = await whole_answer(self._relay, self._settings, path, payload, model)
        if not isinstance(answer, dict):
            raise UpstreamFailed("upstream answered with something other than a JSON object")
        return answer

    async def version(self) -> str:
        data = await self.request_json("GET", "/api/version")
        return str(data.get("version", "unknown")) if isinstance(data, dict) else "unknown"

    async def tags(self) -> list[dict[str, Any]]:
        data = await self.request_json("GET", "/api/tags")
        models = data.get("models", []) if isinstance(data, dict) else []
        return [m for m in models if isinstance(m, dict)]
