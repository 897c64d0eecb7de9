"""OpenAI's API under `/v1`, so the `openai` SDK, LangChain's ChatOpenAI and chat UIs work
through the proxy with their base URL set to `PROXY/v1` and a proxy token as the API key.

Requests are translated into Ollama's native terms (`proxy.api.dialects.openai`) and go the one
way every generation goes (auth, allowlist, validation, limits, audit, metrics, cache,
cancellation). Answers are written as OpenAI's API reference describes them: `chat.completion`
objects, or server-sent events of `chat.completion.chunk` objects (role in the first, an empty
delta with `finish_reason` after the last, a `usage` chunk with no choices when
`stream_options.include_usage` asks for it, then `data: [DONE]`). A failure after the stream
has started ends it with an `error` event, which the SDK raises as an exception.
"""

from __future__ import annotations

import base64
import json
import re
import struct
import time
import uuid
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Path, Request
from fastapi.responses import JSONResponse, StreamingResponse

from proxy.api.accounting import audit_record
from proxy.api.deps import CurrentUser, StateDep
from proxy.api.dialects.openai import (
    ChatCompletionRequest,
    CompletionRequest,
    EmbeddingRequest,
    Sampling,
    chat_ask,
    completion_ask,
)
from proxy.api.generation import answer
from proxy.api.streaming import compact_json, until_disconnected
from proxy.core.dialects import error_body
from proxy.core.errors import ModelNotFound, ProxyError
from proxy.core.model_names import full_model_name
from proxy.core.security import Principal
from proxy.services import catalog
from proxy.services.calls import Ask, plan
from proxy.services.embeddings import EmbedAsk, embed
from proxy.services.relay import Completion, Piece
from proxy.services.state import AppState

router = APIRouter(prefix="/v1", tags=["openai"])

SSE = "text/event-stream"
FINGERPRINT = "fp_ollama"


def sse(data: dict[str, Any] | str) -> bytes:
    text = data if isinstance(data, str) else compact_json(data)
    return f"data: {text}\n\n".encode()


def usage(completion: Completion) -> dict[str, int]:
    return completion.usage


def openai_tool_calls(calls: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Ollama's tool calls as OpenAI's: arguments as a JSON string, an id and an index each."""
    out = []
    for position, call in enumerate(calls):
        function = call.get("function") if isinstance(call.get("function"), dict) else {}
        assert isinstance(function, dict)
        index = function.get("index")
        out.append({
            "id": call.get("id") or f"call_{uuid.uuid4().hex[:24]}",
            "index": index if isinstance(index, int) else position,
            "type": "function",
            "function": {"name": str(function.get("name", "")),
                         "arguments": json.dumps(function.get("arguments") or {},
                                                 ensure_ascii=False)},
        })
    return out


def owned_by(model: str) -> str:
    """The namespace of an Ollama model name (`library` for the library's models)."""
    parts = model.split(":")[0].split("/")
    return parts[-2] if len(parts) > 1 else "library"


def created(timestamp: Any) -> int:
    """Unix seconds of an Ollama timestamp (RFC 3339 with up to nanoseconds), else now."""
    if isinstance(timestamp, str):
        # Python reads at most microseconds: drop the digits past the sixth.
        text = re.sub(r"(\.\d{6})\d+", r"\1", timestamp.replace("Z", "+00:00"))
        try:
            return int(datetime.fromisoformat(text).timestamp())
        except ValueError:
            pass
    return int(time.time())


class ChatWriter:
    """`chat.completion` and `chat.completion.chunk` objects, as Ollama's layer writes them."""

    media_type = SSE

    def __init__(self, model: str, request_id: str, include_usage: bool) -> None:
        self.id = f"chatcmpl-{request_id}"
        self.model = model
        self.include_usage = include_usage
        self.created = int(time.time())
        self.role_sent = False
        self.tool_called = False

    def _chunk(self, delta: dict[str, Any], finish: str | None = None) -> bytes:
        return sse({"id": self.id, "object": "chat.completion.chunk", "created": self.created,
                    "model": self.model, "system_fingerprint": FINGERPRINT,
                    "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})

    def _delta(self, content: str | None = None, **extra: Any) -> dict[str, Any]:
        delta: dict[str, Any] = {}
        if not self.role_sent:
            delta["role"] = "assistant"
            self.role_sent = True
        if content is not None:
            delta["content"] = content
        delta.update({k: v for k, v in extra.items() if v})
        return delta

    def piece(self, piece: Piece) -> list[bytes]:
        frames = []
        if piece.thinking:
            frames.append(self._chunk(self._delta(reasoning=piece.thinking)))
        if piece.content or piece.tool_calls:
            calls = openai_tool_calls(piece.tool_calls)
            self.tool_called |= bool(calls)
            frames.append(self._chunk(self._delta(piece.content, tool_calls=calls)))
        return frames

    def finish_reason(self, completion: Completion, tool_called: bool) -> str:
        reason = completion.done_reason or "stop"
        return "tool_calls" if reason == "stop" and tool_called else reason

    def done(self, completion: Completion) -> list[bytes]:
        frames = [] if self.role_sent else [self._chunk(self._delta(""))]
        frames.append(self._chunk({}, self.finish_reason(completion, self.tool_called)))
        if self.include_usage:
            frames.append(sse({"id": self.id, "object": "chat.completion.chunk",
                               "created": self.created, "model": self.model,
                               "system_fingerprint": FINGERPRINT, "choices": [],
                               "usage": usage(completion)}))
        frames.append(sse("[DONE]"))
        return frames

    def error(self, exc: ProxyError) -> bytes:
        return sse(error_body("openai", exc.status_code, exc.message, exc.code))

    def whole(self, completion: Completion) -> dict[str, Any]:
        message: dict[str, Any] = {"role": "assistant", "content": completion.text}
        calls = openai_tool_calls(completion.tool_calls)
        if calls:
            message["tool_calls"] = calls
        if completion.thinking:
            message["reasoning"] = completion.thinking
        return {"id": self.id, "object": "chat.completion", "created": self.created,
                "model": self.model, "system_fingerprint": FINGERPRINT,
                "choices": [{"index": 0, "message": message,
                             "finish_reason": self.finish_reason(completion, bool(calls))}],
                "usage": usage(completion)}


class CompletionWriter(ChatWriter):
    """The legacy `text_completion` objects of `/v1/completions`."""

    def __init__(self, model: str, request_id: str, include_usage: bool) -> None:
        super().__init__(model, request_id, include_usage)
        self.id = f"cmpl-{request_id}"

    def _object(self, text: str, finish: str | None) -> dict[str, Any]:
        return {"id": self.id, "object": "text_completion", "created": self.created,
                "model": self.model, "system_fingerprint": FINGERPRINT,
                "choices": [{"text": text, "index": 0, "finish_reason": finish,
                             "logprobs": None}]}

    def piece(self, piece: Piece) -> list[bytes]:
        return [sse(self._object(piece.content, None))] if piece.content else []

    def done(self, completion: Completion) -> list[bytes]:
        frames = [sse(self._object("", completion.done_reason or "stop"))]
        if self.include_usage:
            frames.append(sse({**self._object("", None), "choices": [],
                               "usage": usage(completion)}))
        frames.append(sse("[DONE]"))
        return frames

    def whole(self, completion: Completion) -> dict[str, Any]:
        return {**self._object(completion.text, completion.done_reason or "stop"),
                "usage": usage(completion)}


async def _generate(request: Request, state: AppState, user: Principal, ask: Ask,
                    body: Sampling, writer: type[ChatWriter]) -> JSONResponse | StreamingResponse:
    record = audit_record(request.scope)
    planned = await plan(state, user, ask, record)
    return await answer(request, state, user, planned, body.stream,
                        writer(body.model, record.id, body.include_usage))


@router.post("/chat/completions", response_model=None, summary="OpenAI's chat completions")
async def chat_completions(body: ChatCompletionRequest, request: Request, state: StateDep,
                           user: CurrentUser) -> JSONResponse | StreamingResponse:
    return await _generate(request, state, user, chat_ask(body), body, ChatWriter)


@router.post("/completions", response_model=None, summary="OpenAI's (legacy) completions")
async def completions(body: CompletionRequest, request: Request, state: StateDep,
                      user: CurrentUser) -> JSONResponse | StreamingResponse:
    return await _generate(request, state, user, completion_ask(body), body, CompletionWriter)


def _base64(vector: list[float]) -> str:
    return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()


@router.post("/embeddings", summary="OpenAI's embeddings")
async def embeddings(body: EmbeddingRequest, request: Request, state: StateDep,
                     user: CurrentUser) -> dict[str, Any]:
    inputs = [body.input] if isinstance(body.input, str) else body.input
    result = await until_disconnected(request, embed(
        state, user, EmbedAsk(body.model, inputs, dimensions=body.dimensions),
        audit_record(request.scope)))
    encode = _base64 if body.encoding_format == "base64" else (lambda v: v)
    return {"object": "list", "model": body.model,
            "data": [{"object": "embedding", "embedding": encode(vector), "index": i}
                     for i, vector in enumerate(result.vectors)],
            "usage": {"prompt_tokens": result.prompt_tokens,
                      "total_tokens": result.prompt_tokens}}


def _model(entry: dict[str, Any]) -> dict[str, Any]:
    name = str(entry.get("model") or entry.get("name") or "")
    return {"id": name, "object": "model", "created": created(entry.get("modified_at")),
            "owned_by": owned_by(name)}


@router.get("/models", summary="OpenAI's model list: the models users may use")
async def models(state: StateDep, user: CurrentUser) -> dict[str, Any]:
    return {"object": "list", "data": [_model(m) for m in await catalog.allowed_tags(state, user)]}


@router.get("/models/{model:path}", summary="One model, as OpenAI describes a model")
async def model(model: Annotated[str, Path()], state: StateDep,
                user: CurrentUser) -> dict[str, Any]:
    for entry in await catalog.allowed_tags(state, user):
        if full_model_name(model) == full_model_name(str(entry.get("name", ""))):
            return {**_model(entry), "id": model}
    raise ModelNotFound(model)
