"""`/api/generate` and `/api/chat`: validation in Ollama's order, faults, then a `Generation`.

Each handler checks what Ollama's GenerateHandler/ChatHandler (server/routes.go) check, in
their order, so error precedence matches: body, model name, model presence, the unload
shortcut, `think` against the model's capabilities, the capabilities the request needs
(completion; tools; insert for a suffix), then the empty-prompt "load" shortcut. Faults are
consulted only after that: they stand for failures of a generation, which neither a malformed
request nor a bare "load this model" request ever starts. What the model answers is
`replies.plan_reply`'s rule.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from tests.support.simulator.catalog import ModelSpec, full_name
from tests.support.simulator.completion import count_tokens, token_ids
from tests.support.simulator.generation import Generation, GenerationResponse, pieces_text
from tests.support.simulator.network_faults import ListenerControl, abort_connection
from tests.support.simulator.ollama_routes import json_reply, listener_of, sim_of
from tests.support.simulator.payload import (
    ApiError,
    Fields,
    images_of,
    keep_alive_seconds,
    messages_of,
    read_body,
    think_value,
)
from tests.support.simulator.replies import format_kind, plan_reply
from tests.support.simulator.scheduler import QUEUE_FULL_MESSAGE
from tests.support.simulator.state import SimulatorState, ollama_timestamp
from tests.support.simulator.streaming import wait_for_disconnect

IMAGE_TOKENS = 768
"""Prompt tokens per image: Ollama's server/prompt.go counts a CLIP image as 768 tokens."""


class _Hang(Response):
    """Accepts the request and never answers, until the client gives up."""

    def __init__(self, sim: SimulatorState) -> None:
        super().__init__(status_code=200)
        self.sim = sim

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await wait_for_disconnect(receive)
        # Counted so a test can prove its client (a proxy) let go of the hung request.
        self.sim.stats.record_outcome("cancelled")


class _Disconnect(Response):
    """Resets the connection without a single byte of response."""

    def __init__(self, listener: ListenerControl | None) -> None:
        super().__init__(status_code=200)
        self.listener = listener

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not await abort_connection(scope, receive, self.listener):
            # Not served by uvicorn: the closest honest answer is a failure, not silence.
            await json_reply({"error": "simulator cannot reach the connection to drop it"}, 500)(
                scope, receive, send
            )


def _fault_response(request: Request, mode: str, message: str) -> Response | None:
    """The response replacing a generation for a pre-output fault; None to generate."""
    sim = sim_of(request)
    if mode == "hang":
        return _Hang(sim)
    if mode == "disconnect":
        return _Disconnect(listener_of(request))
    if mode == "error500":
        sim.stats.record_outcome("errored")
        return json_reply({"error": message}, 500)
    if mode == "busy503":
        sim.stats.record_outcome("rejected")
        return json_reply({"error": QUEUE_FULL_MESSAGE}, 503)
    return None


def _check_capabilities(spec: ModelSpec, model: str, fields: Fields, *, chat: bool) -> bool:
    """Raise Ollama's 400 for a capability the request needs and the model lacks; return
    whether the model thinks (Ollama turns `think` on for thinking models unless told not)."""
    think = think_value(fields)
    if "thinking" in spec.capabilities:
        thinks = think is not False
    elif think is not None and think is not False:
        raise ApiError(400, f'"{model}" does not support thinking')
    else:
        thinks = False
    if "completion" not in spec.capabilities:
        raise ApiError(400, f'"{model}" does not support {"chat" if chat else "generate"}')
    # scheduleRunner's CheckCapabilities names the model by its full name, unquoted.
    if chat and fields.items("tools", "[]api.Tool") and "tools" not in spec.capabilities:
        raise ApiError(400, f"{full_name(spec.name)} does not support tools")
    if not chat and fields.string("suffix") and "insert" not in spec.capabilities:
        raise ApiError(400, f"{full_name(spec.name)} does not support insert")
    return thinks


def _local_model(sim: SimulatorState, model: str) -> ModelSpec:
    spec = sim.local_model(model) if model else None
    if spec is None:
        raise ApiError(404, f"model '{model}' not found")
    return spec


def _one_object(
    sim: SimulatorState, spec: ModelSpec, model: str, keep_alive: float, *, chat: bool
) -> Response:
    # An empty prompt only loads (or, with keep_alive 0, unloads) the model: one object back.
    sim.mark_loaded(spec, keep_alive)
    body: dict[str, Any] = {"model": model, "created_at": ollama_timestamp()}
    if chat:
        body["message"] = {"role": "assistant", "content": ""}
    else:
        body["response"] = ""
    body["done"] = True
    body["done_reason"] = "unload" if keep_alive == 0 else "load"
    return json_reply(body)


@dataclass
class _Admitted:
    """A request that passed validation and every pre-output fault: it will generate."""

    spec: ModelSpec
    thinks: bool
    fmt: str | dict[str, Any] | None
    fail_with: str | None  # the error a `midstream_error` fault ends the stream with


def _admit(
    request: Request, fields: Fields, model: str, *, chat: bool, empty: bool
) -> _Admitted | Response:
    """The steps both routes share, in Ollama's order: the model, the unload shortcut, the
    capabilities, the load shortcut, then the fault plan. A Response is the whole answer."""
    sim = sim_of(request)
    spec = _local_model(sim, model)
    keep_alive = keep_alive_seconds(fields.raw("keep_alive"))
    if empty and keep_alive == 0:
        return _one_object(sim, spec, model, keep_alive, chat=chat)
    thinks = _check_capabilities(spec, model, fields, chat=chat)
    if empty:
        return _one_object(sim, spec, model, keep_alive, chat=chat)
    fmt = format_kind(fields.raw("format"))
    mode, message = sim.faults.take()
    early = _fault_response(request, mode, message)
    if early is not None:
        return early
    sim.mark_loaded(spec, keep_alive)
    return _Admitted(spec, thinks, fmt, message if mode == "midstream_error" else None)


def _first_tool(fields: Fields) -> dict[str, Any] | None:
    tools = fields.items("tools", "[]api.Tool")
    for tool in tools:
        if not isinstance(tool, dict):
            raise fields.wrong("tools", tool, "api.Tool")
        Fields(tool, "ChatRequest.tools").mapping("function")
    return tools[0] if tools else None


async def generate(request: Request) -> Response:
    received_ns = time.perf_counter_ns()
    sim = sim_of(request)
    fields = Fields(await read_body(request, sim, "GenerateRequest"), "GenerateRequest")
    model = fields.string("model")
    prompt, system = fields.string("prompt"), fields.string("system")
    stream = fields.flag("stream") is not False
    options = fields.mapping("options")
    context = fields.ints("context")
    images = images_of(fields)
    admitted = _admit(request, fields, model, chat=False, empty=not prompt)
    if isinstance(admitted, Response):
        return admitted
    pieces, done_reason = plan_reply(
        model=admitted.spec.name,
        seed_text=prompt,
        options=options,
        think=admitted.thinks,
        fmt=admitted.fmt,
        tool=None,
        length=sim.config.reply_tokens,
    )
    prompt_text = f"{system} {prompt}".strip()
    return GenerationResponse(
        Generation(
            kind="generate",
            model=model,
            pieces=pieces,
            done_reason=done_reason,
            prompt_eval_count=max(1, count_tokens(prompt_text)) + IMAGE_TOKENS * len(images),
            stream=stream,
            first_token_delay=sim.config.first_token_delay,
            tokens_per_second=sim.config.tokens_per_second,
            received_ns=received_ns,
            context_prefix=[*context, *token_ids(prompt_text)],
            response_ids=token_ids(pieces_text(pieces, "content")),
            fail_with=admitted.fail_with,
        ),
        sim,
    )


async def chat(request: Request) -> Response:
    received_ns = time.perf_counter_ns()
    sim = sim_of(request)
    fields = Fields(await read_body(request, sim, "ChatRequest"), "ChatRequest")
    model = fields.string("model")
    messages = messages_of(fields)
    stream = fields.flag("stream") is not False
    options = fields.mapping("options")
    tool = _first_tool(fields)
    if not model:
        raise ApiError(400, "model is required")
    admitted = _admit(request, fields, model, chat=True, empty=not messages)
    if isinstance(admitted, Response):
        return admitted
    last = messages[-1]
    pieces, done_reason = plan_reply(
        model=admitted.spec.name,
        seed_text=str(last.get("content") or ""),
        options=options,
        think=admitted.thinks,
        fmt=admitted.fmt,
        tool=tool if last["role"] == "user" else None,
        length=sim.config.reply_tokens,
    )
    history = " ".join(str(m.get("content") or "") for m in messages)
    images = sum(len(m.get("images") or ()) for m in messages)
    return GenerationResponse(
        Generation(
            kind="chat",
            model=model,
            pieces=pieces,
            done_reason=done_reason,
            prompt_eval_count=max(1, count_tokens(history)) + IMAGE_TOKENS * images,
            stream=stream,
            first_token_delay=sim.config.first_token_delay,
            tokens_per_second=sim.config.tokens_per_second,
            received_ns=received_ns,
            fail_with=admitted.fail_with,
        ),
        sim,
    )


ROUTES = [
    Route("/api/generate", generate, methods=["POST"]),
    Route("/api/chat", chat, methods=["POST"]),
]
