"""Generation for end users: generate, chat, and the models they can pick from."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse

from proxy.api.deps import CurrentUser, RequestId, StateDep
from proxy.api.streaming import ndjson_response, until_disconnected
from proxy.core.state import AppState
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
    StreamError,
)
from proxy.services.calls import PlannedCall, plan_chat, plan_generate
from proxy.services.relay import Completion, collect, relay

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
    state: AppState, planned: PlannedCall, request_id: str
) -> AsyncIterator[dict[str, Any]]:
    call = planned.call
    async for item in relay(state.upstream, call):
        if isinstance(item, Completion):
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


async def _complete(request: Request, state: AppState, planned: PlannedCall) -> Completion:
    completion = await until_disconnected(request, collect(state.upstream, planned.call))
    if planned.after is not None:
        await planned.after(completion)
    return completion


@router.post(
    "/generate",
    response_model=GenerateResponse,
    responses=_stream_doc(GenerateResponse),
    summary="Complete a prompt",
)
async def generate(
    body: GenerateRequest, request: Request, state: StateDep, user: CurrentUser,
    request_id: RequestId,
) -> GenerateResponse | StreamingResponse:
    planned = plan_generate(state, body)
    if body.stream:
        return await ndjson_response(request, _lines(state, planned, request_id),
                                     {"X-Request-ID": request_id})
    done = await _complete(request, state, planned)
    return GenerateResponse(
        model=body.model, response=done.text, done_reason=done.done_reason,
        request_id=request_id, usage=done.usage, timings=done.timings,
    )


@router.post(
    "/chat",
    response_model=ChatResponse,
    responses=_stream_doc(ChatResponse),
    summary="Continue a chat, optionally persisted under a context_id",
)
async def chat(
    body: ChatRequest, request: Request, state: StateDep, user: CurrentUser,
    request_id: RequestId,
) -> ChatResponse | StreamingResponse:
    planned = await plan_chat(state, user, body)
    if body.stream:
        return await ndjson_response(request, _lines(state, planned, request_id),
                                     {"X-Request-ID": request_id})
    done = await _complete(request, state, planned)
    return ChatResponse(
        model=body.model, message=ChatMessage(role="assistant", content=done.text),
        done_reason=done.done_reason, request_id=request_id, context_id=body.context_id,
        usage=done.usage, timings=done.timings,
    )


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
    return ModelList(models=[model_info(m) for m in await state.upstream.tags()])


# Referenced from the NDJSON docs above; listed so that OpenAPI includes their schemas.
STREAM_MODELS = (StreamChunk, StreamDone, StreamError)
