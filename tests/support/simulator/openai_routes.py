"""Ollama's OpenAI-compatible routes under `/v1`, layered on the simulator's native handlers.

As in Ollama (`server/routes.go` mounts `middleware.ChatMiddleware()` in front of its own
ChatHandler, and so on), each route here rewrites the OpenAI request into a native body
(`openai_requests`), runs the native handler on it, and rewrites every object that handler
writes (`openai_responses`) on its way to the client:

    POST /v1/chat/completions → /api/chat       POST /v1/completions → /api/generate
    POST /v1/embeddings       → /api/embed      GET  /v1/models      → /api/tags
    GET  /v1/models/{model}   → /api/show

So the native handlers' validation, queueing, pacing and faults (hang, disconnect, 500, 503,
mid-stream error) reach /v1 clients exactly as they would through Ollama. Errors of the
middleware itself are `AbortWithStatusJSON` replies (gin's `application/json; charset=utf-8`,
no trailing newline); errors of the native handler go through the wrapping writer
(`application/json`, a trailing newline).
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import Message, Receive, Scope, Send

from tests.support.simulator import embed_routes, generate_routes, ollama_routes
from tests.support.simulator.openai_requests import (
    chat_request,
    completion_request,
    embeddings_request,
)
from tests.support.simulator.openai_responses import (
    ChatTranslator,
    CompletionTranslator,
    EmbeddingTranslator,
    ListTranslator,
    RetrieveTranslator,
    encoded,
    error_body,
    native_error_message,
)
from tests.support.simulator.payload import TRANSLATED, ApiError, read_body
from tests.support.simulator.streaming import NDJSON, OllamaJSONResponse

Handler = Callable[[Request], Awaitable[Response]]
EVENT_STREAM = "text/event-stream"
PLAIN_JSON = "application/json"  # what the /v1 writers set, without gin's charset


class Translator(Protocol):
    def feed(self, native: dict[str, Any]) -> bytes: ...


def _middleware_error(exc: ApiError) -> Response:
    return OllamaJSONResponse(error_body(exc.status, exc.message), status_code=exc.status)


def _native_error(status: int, native: Any) -> bytes:
    return encoded(error_body(status, native_error_message(native)))


class TranslatedResponse(Response):
    """Runs a native response and rewrites what it sends, object by object."""

    def __init__(self, native: Response, translator: Translator, stream: bool) -> None:
        super().__init__(status_code=200)
        self.native, self.translator, self.stream = native, translator, stream

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        status, native_type, buffer = 200, "", b""
        started, pending = False, b""

        async def write(data: bytes, *, last: bool) -> None:
            nonlocal started, pending
            if not self.stream and not last:
                pending += data  # a single JSON reply goes out whole, with its length
                return
            data, pending = pending + data, b""
            if not started:
                started = True
                is_error = status != 200
                kind = EVENT_STREAM if self.stream and not is_error else PLAIN_JSON
                headers = [(b"content-type", kind.encode())]
                if last:
                    headers.append((b"content-length", str(len(data)).encode()))
                await send({"type": "http.response.start", "status": status, "headers": headers})
            await send({"type": "http.response.body", "body": data, "more_body": not last})

        def translate(line: bytes) -> bytes:
            native = json.loads(line)
            if status != 200:
                return _native_error(status, native)
            return self.translator.feed(native if isinstance(native, dict) else {})

        async def intercept(message: Message) -> None:
            nonlocal status, native_type, buffer
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = dict(message.get("headers", []))
                native_type = headers.get(b"content-type", b"").decode()
                return
            if message["type"] != "http.response.body":
                await send(message)
                return
            buffer += message.get("body", b"")
            more = message.get("more_body", False)
            out = b""
            if native_type == NDJSON:
                *lines, buffer = buffer.split(b"\n")
                out = b"".join(translate(line) for line in lines if line.strip())
            elif not more and buffer.strip():
                out, buffer = translate(buffer), b""
            await write(out, last=not more)

        await self.native(scope, receive, intercept)


async def _through_native(
    request: Request,
    handler: Handler,
    native_body: dict[str, Any],
    translator: Translator,
    stream: bool,
) -> Response:
    body = encoded(native_body)
    delivered = False

    async def receive() -> Message:
        nonlocal delivered
        if not delivered:
            delivered = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await request.receive()

    inner = Request({**request.scope, TRANSLATED: True}, receive)
    try:
        native = await handler(inner)
    except ApiError as exc:
        native = OllamaJSONResponse({"error": exc.message}, status_code=exc.status)
    return TranslatedResponse(native, translator, stream)


async def _openai_body(request: Request, struct: str) -> dict[str, Any]:
    sim = ollama_routes.sim_of(request)
    return await read_body(request, sim, struct, package="openai", empty="EOF")


async def _generation(
    request: Request,
    struct: str,
    to_native: Callable[[dict[str, Any]], tuple[dict[str, Any], bool, bool]],
    translator: Callable[[bool, bool], Translator],
    handler: Handler,
) -> Response:
    try:
        native, stream, usage = to_native(await _openai_body(request, struct))
    except ApiError as exc:
        return _middleware_error(exc)
    return await _through_native(request, handler, native, translator(stream, usage), stream)


async def chat_completions(request: Request) -> Response:
    return await _generation(
        request, "ChatCompletionRequest", chat_request, ChatTranslator, generate_routes.chat
    )


async def completions(request: Request) -> Response:
    return await _generation(
        request,
        "CompletionRequest",
        completion_request,
        CompletionTranslator,
        generate_routes.generate,
    )


async def embeddings(request: Request) -> Response:
    try:
        native, encoding = embeddings_request(await _openai_body(request, "EmbedRequest"))
    except ApiError as exc:
        return _middleware_error(exc)
    translator = EmbeddingTranslator(native["model"], encoding)
    return await _through_native(request, embed_routes.embed, native, translator, False)


async def models(request: Request) -> Response:
    return await _through_native(request, ollama_routes.tags, {}, ListTranslator(), False)


async def model(request: Request) -> Response:
    name = request.path_params["model"]
    translator = RetrieveTranslator(name)
    return await _through_native(request, ollama_routes.show, {"name": name}, translator, False)


ROUTES = [
    Route("/v1/chat/completions", chat_completions, methods=["POST"]),
    Route("/v1/completions", completions, methods=["POST"]),
    Route("/v1/embeddings", embeddings, methods=["POST"]),
    Route("/v1/models", models, methods=["GET"]),
    Route("/v1/models/{model}", model, methods=["GET"]),
]
