"""Generation for end users: generate, chat, and the models they can pick from."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, StreamingResponse

from proxy.api.accounting import audit_record
from proxy.api.deps import CurrentUser, RequestId, StateDep
from proxy.api.generation import answer
from proxy.api.streaming import NDJSON, error_line, ndjson_line, until_disconnected
from proxy.core.errors import ProxyError
from proxy.schemas import (
    Caller,
    ChatRequest,
    ChatResponse,
    EmbedRequest,
    EmbedResponse,
    EmbedUsage,
    ErrorResponse,
    GenerateRequest,
    GenerateResponse,
    ModelInfo,
    ModelList,
)
from proxy.services.calls import plan_chat, plan_generate
from proxy.services.catalog import allowed_tags
from proxy.services.embeddings import EmbedAsk, embed
from proxy.services.relay import Completion, Piece

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


class LlmWriter:
    """The proxy's own dialect: NDJSON StreamChunk lines and a StreamDone line, or one object."""

    media_type = NDJSON

    def __init__(self, kind: str, model: str, request_id: str,
                 context_id: str | None = None) -> None:
        self.kind, self.model = kind, model
        self.request_id, self.context_id = request_id, context_id

    def piece(self, piece: Piece) -> list[bytes]:
        # A StreamChunk, written as its model would dump it (tests/proxy/fast/test_hot_routes.py
        # holds the two to each other): one line per token, so without building the model.
        if not piece.content:
            return []
        if self.kind == "generate":
            chunk: dict[str, Any] = {"model": self.model, "response": piece.content,
                                     "done": False}
        else:
            chunk = {"model": self.model,
                     "message": {"role": "assistant", "content": piece.content}, "done": False}
        return [ndjson_line(chunk)]

    def _done(self, completion: Completion) -> dict[str, Any]:
        # A StreamDone as its model dumps it (held to it by tests/proxy/fast/test_hot_routes.py).
        return {"model": self.model, "done": True, "done_reason": completion.done_reason,
                "request_id": self.request_id, "context_id": self.context_id,
                "usage": completion.usage, "timings": completion.timings}

    def done(self, completion: Completion) -> list[bytes]:
        return [ndjson_line(self._done(completion))]

    def error(self, exc: ProxyError) -> bytes:
        return error_line(exc)

    def whole(self, completion: Completion) -> dict[str, Any]:
        # A GenerateResponse or ChatResponse, as its model dumps it.
        if self.kind == "generate":
            return {**self._done(completion), "response": completion.text}
        return {**self._done(completion),
                "message": {"role": "assistant", "content": completion.text}}


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
    planned = await plan_generate(state, user, body, audit_record(request.scope))
    return await answer(request, state, user, planned, body.stream,
                        LlmWriter("generate", body.model, request_id))


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
    planned = await plan_chat(state, user, body, audit_record(request.scope))
    return await answer(request, state, user, planned, body.stream,
                        LlmWriter("chat", body.model, request_id, planned.context_id))


@router.post("/embed", response_model=EmbedResponse, responses=ERRORS,
             summary="Embed one text or several (for search and RAG)")
async def embed_texts(body: EmbedRequest, request: Request, state: StateDep, user: CurrentUser,
                      request_id: RequestId) -> EmbedResponse:
    inputs = [body.input] if isinstance(body.input, str) else body.input
    ask = EmbedAsk(body.model, inputs, truncate=body.truncate, dimensions=body.dimensions)
    result = await until_disconnected(request, embed(state, user, ask,
                                                     audit_record(request.scope)))
    return EmbedResponse(model=body.model, embeddings=result.vectors, request_id=request_id,
                         usage=EmbedUsage(prompt_tokens=result.prompt_tokens,
                                          total_tokens=result.prompt_tokens))


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
    return ModelList(models=[model_info(m) for m in await allowed_tags(state, user)])


@router.get("/me", response_model=Caller, responses=ERRORS,
            summary="Who the credential is: user, role, and the API key if one was used")
async def me(user: CurrentUser) -> Caller:
    return Caller(user=user.sub, role=user.role,
                  api_key_id=user.key.id if user.key is not None else None)
