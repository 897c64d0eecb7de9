"""Ollama's own API under `/ollama`, so Ollama's clients work through the proxy unchanged:
`ollama.Client(host=PROXY + "/ollama", headers={"Authorization": "Bearer …"})`, LangChain's
ChatOllama, Open WebUI's Ollama connection.

This module only translates: a request becomes an `Ask` (or `EmbedAsk`) and goes the one way
every generation goes (auth, allowlist, validation, rate and concurrency limits, audit, metrics,
cache, cancellation). What Ollama streams back is relayed in Ollama's own shape.

Policy on top of Ollama's API: `keep_alive` at most PROXY_MAX_KEEP_ALIVE_SECONDS, and never
forever; options that decide how the engine uses the GPU (`num_gpu`, `main_gpu`, …) refused;
an empty prompt (which makes Ollama load a model) refused; model management (`pull`, `push`,
`create`, `copy`, `delete`, blobs) refused here, since it is the operator's, through the admin
API (`/api/admin/models`).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator

from proxy.api.accounting import audit_record
from proxy.api.deps import CurrentUser, StateDep
from proxy.api.generation import answer
from proxy.api.streaming import NDJSON, ndjson_line, until_disconnected
from proxy.core.errors import Forbidden, ProxyError
from proxy.schemas import GenerationOptions, ModelName
from proxy.services import catalog
from proxy.services.calls import NATIVE_FIELDS, Ask, plan
from proxy.services.embeddings import EmbedAsk, embed
from proxy.services.relay import Completion, Kind, Piece

router = APIRouter(prefix="/ollama/api", tags=["ollama"])

Base64Image = Annotated[str, StringConstraints(max_length=20_000_000)]
Format = Literal["", "json"] | dict[str, Any] | None
Think = bool | Literal["low", "medium", "high"] | None
KeepAlive = float | str | None
OPERATOR_ONLY = (("/pull", ["POST"]), ("/push", ["POST"]), ("/create", ["POST"]),
                 ("/copy", ["POST"]), ("/delete", ["DELETE"]),
                 ("/blobs/{digest}", ["HEAD", "POST"]))


class OllamaMessage(BaseModel):
    model_config = ConfigDict(extra="forbid")

    role: Literal["system", "user", "assistant", "tool"]
    content: str = Field("", max_length=100_000)
    thinking: str | None = Field(None, max_length=100_000)
    images: list[Base64Image] | None = Field(None, max_length=16)
    tool_calls: list[dict[str, Any]] | None = Field(None, max_length=64)
    tool_name: str | None = Field(None, max_length=200)


class OllamaGenerationFields(BaseModel):
    """What Ollama's chat and generate requests share."""

    model_config = ConfigDict(extra="forbid")

    model: ModelName
    format: Format = None
    options: GenerationOptions | None = None
    keep_alive: KeepAlive = None
    stream: bool = True
    think: Think = None
    logprobs: bool | None = None
    top_logprobs: int | None = Field(None, ge=0, le=20)


class OllamaChatRequest(OllamaGenerationFields):
    """Ollama's ChatRequest (api/types.go), as its clients send it."""

    messages: list[OllamaMessage] = Field(default_factory=list)
    tools: list[dict[str, Any]] | None = Field(None, max_length=128)


class OllamaGenerateRequest(OllamaGenerationFields):
    """Ollama's GenerateRequest, without what would let a caller rewrite the model's prompt
    template (`template`, `context`) or generate images (`width`, `height`, `steps`)."""

    prompt: str = Field("", max_length=1_000_000)
    suffix: str | None = Field(None, max_length=100_000)
    system: str | None = Field(None, max_length=20_000)
    raw: bool | None = None
    images: list[Base64Image] | None = Field(None, max_length=16)

    @field_validator("prompt")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("prompt must not be blank (an empty prompt only loads the model, "
                             "which is the operator's to do)")
        return value


class OllamaEmbedRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: ModelName
    input: str | list[str]
    truncate: bool | None = None
    dimensions: int | None = Field(None, ge=1, le=65536)
    options: GenerationOptions | None = None
    keep_alive: KeepAlive = None


class ShowRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: ModelName
    verbose: bool | None = None


def native_fields(body: BaseModel) -> dict[str, Any]:
    """The fields Ollama gets as they are, leaving out what the caller did not send."""
    given = body.model_dump(exclude_none=True, include=set(NATIVE_FIELDS))
    return {k: v for k, v in given.items() if v != "" or k != "format"}


class OllamaWriter:
    """Ollama's own NDJSON objects, relayed as Ollama sent them; one object when not streamed."""

    media_type = NDJSON

    def __init__(self, kind: Kind) -> None:
        self.kind = kind

    def piece(self, piece: Piece) -> list[bytes]:
        return [ndjson_line(piece.raw)]

    def done(self, completion: Completion) -> list[bytes]:
        return [ndjson_line(completion.final)]

    def error(self, exc: ProxyError) -> bytes:
        return ndjson_line({"error": exc.message})

    def whole(self, completion: Completion) -> dict[str, Any]:
        final = dict(completion.final)
        extra: dict[str, Any] = {"thinking": completion.thinking} if completion.thinking else {}
        if self.kind == "generate":
            return {**final, "response": completion.text, **extra}
        message = dict(final.get("message") or {"role": "assistant"})
        message.update(content=completion.text, **extra)
        if completion.tool_calls:
            message["tool_calls"] = completion.tool_calls
        return {**final, "message": message}


@router.post("/chat", response_model=None, summary="Ollama's /api/chat")
async def chat(body: OllamaChatRequest, request: Request, state: StateDep,
               user: CurrentUser) -> JSONResponse | StreamingResponse:
    ask = Ask("chat", body.model, body.options,
              messages=[m.model_dump(exclude_none=True) for m in body.messages],
              native=native_fields(body))
    planned = await plan(state, user, ask, audit_record(request.scope))
    return await answer(request, state, user, planned, body.stream, OllamaWriter("chat"))


@router.post("/generate", response_model=None, summary="Ollama's /api/generate")
async def generate(body: OllamaGenerateRequest, request: Request, state: StateDep,
                   user: CurrentUser) -> JSONResponse | StreamingResponse:
    ask = Ask("generate", body.model, body.options, prompt=body.prompt, system=body.system,
              native=native_fields(body))
    planned = await plan(state, user, ask, audit_record(request.scope))
    return await answer(request, state, user, planned, body.stream, OllamaWriter("generate"))


@router.post("/embed", summary="Ollama's /api/embed")
async def embed_route(body: OllamaEmbedRequest, request: Request, state: StateDep,
                      user: CurrentUser) -> dict[str, Any]:
    inputs = [body.input] if isinstance(body.input, str) else body.input
    ask = EmbedAsk(body.model, inputs, body.truncate, body.dimensions, body.keep_alive,
                   body.options)
    result = await until_disconnected(request, embed(state, user, ask,
                                                     audit_record(request.scope)))
    return result.raw


@router.get("/tags", summary="Ollama's /api/tags: the models users may use")
async def tags(state: StateDep, user: CurrentUser) -> dict[str, Any]:
    return {"models": await catalog.allowed_tags(state, user)}


@router.get("/ps", summary="Ollama's /api/ps: the models users may use that are loaded")
async def ps(state: StateDep, user: CurrentUser) -> dict[str, Any]:
    return {"models": await catalog.allowed_running(state, user)}


@router.post("/show", summary="Ollama's /api/show")
async def show(body: ShowRequest, state: StateDep, user: CurrentUser) -> dict[str, Any]:
    return await catalog.show(state, body.model, user)


@router.get("/version", summary="Ollama's /api/version: the engine's version")
async def version(state: StateDep, user: CurrentUser) -> dict[str, str]:
    return {"version": await state.upstream.version()}


async def operator_only(request: Request, user: CurrentUser) -> None:
    operation = request.url.path.removeprefix("/ollama")
    raise Forbidden(f"{operation} is the operator's: models are managed through the admin API "
                    "(/api/admin/models), not through the Ollama dialect")


for _path, _methods in OPERATOR_ONLY:
    router.add_api_route(_path, operator_only, methods=_methods, include_in_schema=False)
