"""Generation for end users: generate, chat, and the models they can pick from."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, StreamingResponse

from proxy.api.accounting import audit_record
from proxy.api.deps import CurrentUser, RequestId, StateDep
from proxy.api.streaming import ndjson_response, until_disconnected
from proxy.audit.record import AuditRecord
from proxy.core.cache import cache_key, is_deterministic
from proxy.core.model_names import full_model_name
from proxy.core.security import Principal
from proxy.schemas import (
    ChatMessage,
    ChatRequest,
    ChatResponse,
    ErrorResponse,
    GenerateRequest,
    GenerateResponse,
    ModelInfo,
    ModelList,
    StreamChunk,
    StreamDone,
)
from proxy.services.calls import PlannedCall, plan_chat, plan_generate
from proxy.services.relay import Completion, collect, relay
from proxy.services.state import AppState

router = APIRouter(prefix="/api/llm", tags=["llm"])

ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorResponse}
    for code in (400, 401, 404, 413, 422, 499, 502, 503, 504)
}


def _stream_doc(final: type[Any]) -> dict[int | str, dict[str, Any]]:
    return {
        200: {
            "model": final,
            "description": (
                "With `stream: false`, one JSON object. With `stream: true` (the default), "
                "`application/x-ndjson`: StreamChunk lines, then one StreamDone line (or a "
                "StreamError line if the generation failed after it started)."
            ),
            "content": {
                "application/x-ndjson": {
                    "schema": {
                        "oneOf": [
                            {"$ref": "#/components/schemas/StreamChunk"},
                            {"$ref": "#/components/schemas/StreamDone"},
                            {"$ref": "#/components/schemas/StreamError"},
                        ]
                    }
                }
            },
        },
        **ERRORS,
    }


async def _lines(
    state: AppState, planned: PlannedCall, request_id: str, record: AuditRecord
) -> AsyncIterator[dict[str, Any]]:
    call = planned.call
    async for item in relay(state.upstream, call):
        if isinstance(item, Completion):
            planned.account_completion(record, item)
            if planned.after is not None:
                await planned.after(item)
            yield StreamDone(
                model=call.model, done_reason=item.done_reason, request_id=request_id,
                context_id=planned.context_id, usage=item.usage, timings=item.timings,
            ).model_dump()
            return
        if call.kind == "generate":
            yield StreamChunk(model=call.model, response=item).model_dump(exclude_none=True)
        else:
            yield StreamChunk(
                model=call.model, message=ChatMessage(role="assistant", content=item)
            ).model_dump(exclude_none=True)


def _cacheable(request: Request, state: AppState, user: Principal, planned: PlannedCall
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


async def _answer(
    request: Request, state: AppState, user: Principal, record: AuditRecord,
    planned: PlannedCall, stream: bool, request_id: str,
    shape: Callable[[Completion], dict[str, Any]],
) -> JSONResponse | StreamingResponse:
    """The common path of generate and chat once admitted and planned: cache, relay.

    The rate limit came before the cache (in planning): a cached answer costs no GPU, but it is
    still a request.
    """
    key = None if stream else _cacheable(request, state, user, planned)
    if key is not None:
        cached = await state.cache.get(key)
        if cached is not None:
            record.cached = True
            usage = cached.get("usage", {})
            record.prompt_tokens = int(usage.get("prompt_tokens", 0))
            record.completion_tokens = int(usage.get("completion_tokens", 0))
            return JSONResponse({**cached, "request_id": request_id},
                                headers={"X-Cache": "HIT"})
    if stream:
        return await ndjson_response(request, _lines(state, planned, request_id, record),
                                     {"X-Request-ID": request_id})
    completion = await until_disconnected(request, collect(state.upstream, planned.call))
    planned.account_completion(record, completion)
    if planned.after is not None:
        await planned.after(completion)
    body = shape(completion)
    if key is not None:
        await state.cache.put(key, body)
    return JSONResponse({**body, "request_id": request_id},
                        headers={"X-Cache": "MISS"} if key is not None else None)


@router.post(
    "/generate",
    response_model=GenerateResponse,
    responses=_stream_doc(GenerateResponse),
    summary="Complete a prompt (or a stored template)",
)
async def generate(
    body: GenerateRequest, request: Request, state: StateDep, user: CurrentUser,
    request_id: RequestId,
) -> JSONResponse | StreamingResponse:
    record = audit_record(request.scope)
    planned = await plan_generate(state, user, body, record)

    def shape(done: Completion) -> dict[str, Any]:
        return GenerateResponse(
            model=body.model, response=done.text, done_reason=done.done_reason,
            request_id=request_id, usage=done.usage, timings=done.timings,
        ).model_dump(mode="json")

    return await _answer(request, state, user, record, planned, body.stream, request_id,
                         shape)


@router.post(
    "/chat",
    response_model=ChatResponse,
    responses=_stream_doc(ChatResponse),
    summary="Continue a chat, optionally persisted under a context_id",
)
async def chat(
    body: ChatRequest, request: Request, state: StateDep, user: CurrentUser,
    request_id: RequestId,
) -> JSONResponse | StreamingResponse:
    record = audit_record(request.scope)
    planned = await plan_chat(state, user, body, record)

    def shape(done: Completion) -> dict[str, Any]:
        return ChatResponse(
            model=body.model, message=ChatMessage(role="assistant", content=done.text),
            done_reason=done.done_reason, request_id=request_id, context_id=planned.context_id,
            usage=done.usage, timings=done.timings,
        ).model_dump(mode="json")

    return await _answer(request, state, user, record, planned, body.stream, request_id,
                         shape)


def model_info(raw: dict[str, Any]) -> ModelInfo:
    details = raw.get("details") if isinstance(raw.get("details"), dict) else {}
    assert isinstance(details, dict)
    return ModelInfo(
        name=str(raw.get("name") or raw.get("model") or ""),
        size=raw.get("size") if isinstance(raw.get("size"), int) else None,
        family=details.get("family"),
        parameter_size=details.get("parameter_size"),
        quantization_level=details.get("quantization_level"),
        modified_at=raw.get("modified_at"),
        digest=raw.get("digest"),
    )


@router.get("/models", response_model=ModelList, responses=ERRORS, summary="Models upstream has")
async def models(state: StateDep, user: CurrentUser) -> ModelList:
    tags = await state.upstream.tags()
    state.known_models.update([str(m.get("name", "")) for m in tags])
    allowed = state.settings.proxy_model_allowlist
    infos = [model_info(m) for m in tags]
    if allowed:
        names = {full_model_name(a) for a in allowed}
        infos = [i for i in infos if full_model_name(i.name) in names]
    return ModelList(models=infos)
