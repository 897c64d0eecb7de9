"""The one answer path of a planned generation, whatever its dialect: cache, relay, stream.

A route translates its request into an `Ask`, plans it (`proxy.services.calls`) and hands the
planned call here with a `Writer`: the only part that differs between dialects is how pieces, the
end and a late failure are written. Caching, cancellation on disconnect, accounting into the
audit record and `planned.after` (storing a conversation turn) are the same code for all.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, Protocol

from fastapi import Request
from fastapi.responses import JSONResponse, StreamingResponse

from proxy.api.accounting import audit_record
from proxy.api.streaming import stream_response, until_disconnected
from proxy.core.cache import cache_key, is_deterministic
from proxy.core.errors import ProxyError
from proxy.core.security import Principal
from proxy.services.calls import PlannedCall
from proxy.services.relay import Completion, Piece, complete, relay
from proxy.services.state import AppState


class Writer(Protocol):
    """How one dialect writes a generation; made per request (it may keep state, e.g. ids)."""

    media_type: str

    def piece(self, piece: Piece) -> list[bytes]:
        """Frames for one piece of a stream (none to skip it)."""
        ...

    def done(self, completion: Completion) -> list[bytes]:
        """Frames that end a successful stream."""
        ...

    def error(self, exc: ProxyError) -> bytes:
        """The frame that ends a stream failing after it started (the status is sent)."""
        ...

    def whole(self, completion: Completion) -> dict[str, Any]:
        """The body of a non-streamed answer."""
        ...


def cacheable(request: Request, state: AppState, user: Principal, planned: PlannedCall
              ) -> str | None:
    """The cache key, if this non-streamed request may be answered from (and stored in) cache."""
    if not state.cache.enabled or planned.after is not None:
        return None
    bypass = request.headers.get("x-cache-bypass", "").strip().lower()
    control = request.headers.get("cache-control", "").lower()
    if bypass in ("1", "true", "yes") or "no-cache" in control or "no-store" in control:
        return None
    if not is_deterministic(planned.call.payload):
        return None
    return cache_key(planned.call.payload, None if state.settings.proxy_cache_shared else user.sub)


async def _frames(state: AppState, planned: PlannedCall, request: Request,
                  writer: Writer) -> AsyncIterator[bytes]:
    record = audit_record(request.scope)
    async for item in relay(state.upstream, planned.call):
        if isinstance(item, Completion):
            planned.account_completion(record, item)
            if planned.after is not None:
                await planned.after(item)
            for frame in writer.done(item):
                yield frame
            return
        for frame in writer.piece(item):
            yield frame


async def answer(request: Request, state: AppState, user: Principal, planned: PlannedCall,
                 stream: bool, writer: Writer) -> JSONResponse | StreamingResponse:
    """Answer an admitted, planned generation: from the cache, as a stream, or as one object.

    The rate limit came before the cache (in planning): a cached answer costs no GPU, but it is
    still a request.
    """
    record = audit_record(request.scope)
    request_id = record.id
    key = None if stream else cacheable(request, state, user, planned)
    if key is not None:
        cached = await state.cache.get(key)
        if cached is not None:
            completion = Completion.from_json(cached)
            record.cached = True
            record.prompt_tokens = completion.prompt_tokens
            record.completion_tokens = completion.completion_tokens
            return JSONResponse(writer.whole(completion), headers={"X-Cache": "HIT"})
    if stream:
        return await stream_response(request, _frames(state, planned, request, writer),
                                     writer.media_type, {"X-Request-ID": request_id},
                                     writer.error)
    completion = await until_disconnected(request, complete(state.upstream, planned.call))
    planned.account_completion(record, completion)
    if planned.after is not None:
        await planned.after(completion)
    if key is not None:
        await state.cache.put(key, completion.to_json())
    return JSONResponse(writer.whole(completion),
                        headers={"X-Cache": "MISS"} if key is not None else None)
