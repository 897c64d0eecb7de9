"""What every engine client shares: one connection pool per engine, with the OLLAMA_* timeouts
and limits, and one JSON request whose every failure is an UpstreamError."""

from __future__ import annotations

from typing import Any

import httpx

from proxy.core.errors import UpstreamFailed, error_from_upstream_response, map_transport_error
from proxy.core.settings import Settings


def engine_client(settings: Settings, base_url: str, headers: dict[str, str] | None = None,
                  transport: httpx.AsyncBaseTransport | None = None) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        base_url=base_url,
        headers=headers,
        timeout=httpx.Timeout(
            connect=settings.ollama_connect_timeout,
            read=settings.ollama_read_timeout,
            write=settings.ollama_write_timeout,
            pool=settings.ollama_pool_timeout,
        ),
        limits=httpx.Limits(
            max_connections=settings.ollama_max_connections,
            max_keepalive_connections=min(20, settings.ollama_max_connections),
        ),
        transport=transport,
        # Engines are on a private network; never pick up a host-wide proxy for them.
        trust_env=False,
    )


async def json_request(http: httpx.AsyncClient, method: str, path: str,
                       payload: dict[str, Any] | None, model: str | None) -> Any:
    """One request, one JSON (or empty) answer; every failure raised as an UpstreamError."""
    try:
        response = await http.request(method, path, json=payload)
    except httpx.HTTPError as exc:
        raise map_transport_error(exc) from exc
    if response.status_code >= 400:
        raise error_from_upstream_response(response.status_code, response.content, model)
    if not response.content:
        return None
    try:
        return response.json()
    except ValueError as exc:
        raise UpstreamFailed("upstream answered with invalid JSON") from exc
