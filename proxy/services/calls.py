"""Turning a generation request, in whichever dialect it came, into an upstream call plus what
to do after it.

Every dialect (the proxy's own `/api/llm/*` and WebSocket, OpenAI's `/v1`, Ollama's `/ollama`)
translates its request into an `Ask`, Ollama's native terms, and plans it here: one path, so all
of them get the same limits, validation and history rules. The order is the point: checks that
cost nothing (the request's own fields against settings) come first, then the user's rate limit
and concurrency slot, and only then anything that costs the proxy something (a database read, a
template render, a look-up upstream): a user over their limit cannot make the proxy work, nor
learn anything from how it fails.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from proxy.audit.record import AuditRecord
from proxy.core.errors import RequestInvalid
from proxy.core.model_names import full_model_name
from proxy.core.security import Principal
from proxy.core.settings import Settings
from proxy.core.token_limits import TokenMeter
from proxy.schemas import ChatMessage, ChatRequest, GenerateRequest, GenerationOptions
from proxy.services import conversations, templates
from proxy.services.context_lengths import DEFAULT_NUM_CTX_CAP
from proxy.services.relay import Completion, Kind, Piece, UpstreamCall, complete, relay
from proxy.services.state import AppState
from proxy.services.validation import (
    check_ask,
    check_chat_context,
    check_generate_context,
    check_key_models,
)
from proxy.upstream.router import Engine

AfterCompletion = Callable[[Completion], Awaitable[None]]

# Fields of Ollama's generate/chat requests that the dialects pass through as they are, once
# checked: tools, structured output, thinking, images, how long the model stays loaded.
NATIVE_FIELDS = ("tools", "format", "think", "images", "keep_alive", "suffix", "raw", "logprobs",
                 "top_logprobs")


@dataclass
class Ask:
    """One generation in Ollama's native terms, whichever dialect asked for it."""

    kind: Kind
    model: str
    options: GenerationOptions | None = None
    prompt: str | None = None  # generate
    system: str | None = None  # generate
    messages: list[dict[str, Any]] = field(default_factory=list)  # chat, Ollama's shape
    native: dict[str, Any] = field(default_factory=dict)  # NATIVE_FIELDS that were given

    def audit_text(self) -> str:
        if self.kind == "generate":
            return self.prompt or ""
        return "\n".join(str(m.get("content") or "") for m in self.messages)

    def call(self) -> UpstreamCall:
        payload: dict[str, Any] = {"model": self.model}
        if self.kind == "generate":
            payload["prompt"] = self.prompt or ""
            if self.system is not None:
                payload["system"] = self.system
        else:
            payload["messages"] = self.messages
        payload.update(self.native)
        if self.options is not None and (values := self.options.model_dump(exclude_none=True)):
            payload["options"] = values
        return UpstreamCall(self.kind, self.model, payload)


@dataclass
class PlannedCall:
    call: UpstreamCall
    meter: TokenMeter
    after: AfterCompletion | None = None
    context_id: str | None = None

    async def relay(self, upstream: Engine) -> AsyncIterator[Piece | Completion]:
        """The generation, piece by piece, counted into the caller's token windows as it
        flows: a piece that takes one past its limit is not yielded (QuotaExceeded)."""
        async for item in relay(upstream, self.call):
            if isinstance(item, Completion):
                await self.meter.settle(item.prompt_tokens + item.completion_tokens)
            else:
                await self.meter.chunk()
            yield item

    async def collect(self, upstream: Engine) -> Completion:
        """The whole answer, asked upstream as one (`complete`), counted into the caller's token
        windows when it has come: a non-streamed answer can take a window past its limit by at
        most itself (bounded by num_predict); the next request is then refused."""
        completion = await complete(upstream, self.call)
        await self.meter.settle(completion.prompt_tokens + completion.completion_tokens)
        return completion

    @staticmethod
    def account_completion(record: AuditRecord, completion: Completion) -> None:
        record.prompt_tokens = completion.prompt_tokens
        record.completion_tokens = completion.completion_tokens
        record.ttft_ms = completion.first_token_ms
        record.upstream_ms = completion.upstream_ms
        record.tokens_per_second = completion.tokens_per_second


async def admit(state: AppState, user: Principal, record: AuditRecord) -> TokenMeter:
    """Check the user's token limits, hold their budgets (charged by `finish`), apply their
    rate limit and take a concurrency slot (released by `finish`); the meter counts the
    generation's tokens."""
    meter = await state.limiter.check_tokens(user)
    await state.budgets.admit(user, record)
    decision, release = await state.limiter.admit(user, record.id)
    record.on_finish.append(release)
    record.on_finish.append(meter.close)
    if decision is not None:
        record.response_headers.update(decision.headers())
    return meter


async def check_num_ctx(state: AppState, model: str, options: GenerationOptions | None) -> None:
    """`num_ctx` within PROXY_MAX_NUM_CTX, or else within the model's own context length."""
    requested = options.num_ctx if options is not None else None
    if requested is None:
        return
    configured = state.settings.proxy_max_num_ctx
    if configured is not None:
        if requested > configured:
            raise RequestInvalid(
                f"options.num_ctx must be at most {configured} (PROXY_MAX_NUM_CTX)")
        return
    own = await state.context_lengths.of(state.upstream, model)
    cap = own if own is not None else DEFAULT_NUM_CTX_CAP
    if requested > cap:
        why = (f"the context length of {model}" if own is not None
               else f"{model} reports no context length")
        raise RequestInvalid(f"options.num_ctx must be at most {cap} ({why}; set "
                             "PROXY_MAX_NUM_CTX for another cap)")


def account_request(record: AuditRecord, settings: Settings, model: str,
                    prompt: str | None) -> None:
    """What the request asks, as far as it is known; set before the limit, so that a refused
    request's audit row says it too."""
    record.model = full_model_name(model)
    if prompt is not None:
        record.set_prompt(prompt, settings.proxy_audit_store_prompts)


async def prepare(state: AppState, user: Principal, ask: Ask, record: AuditRecord
                  ) -> TokenMeter:
    """What every generation goes through before it may cost anything: accounted, checked,
    rate-limited and given a concurrency slot, `num_ctx` bounded."""
    account_request(record, state.settings, ask.model,
                    None if ask.kind == "generate" and ask.prompt is None else ask.audit_text())
    check_ask(ask, state.settings)
    check_key_models(ask.model, user)
    meter = await admit(state, user, record)
    await check_num_ctx(state, ask.model, ask.options)
    return meter


async def plan(state: AppState, user: Principal, ask: Ask, record: AuditRecord) -> PlannedCall:
    """A generation asked in the OpenAI or Ollama dialect: no templates, no stored history."""
    meter = await prepare(state, user, ask, record)
    return PlannedCall(ask.call(), meter)


async def plan_generate(state: AppState, user: Principal, body: GenerateRequest,
                        record: AuditRecord) -> PlannedCall:
    ask = Ask("generate", body.model, body.options, prompt=body.prompt, system=body.system)
    meter = await prepare(state, user, ask, record)
    if body.template is not None:
        ask.prompt = await templates.render(state.sessions, state.templates, body.template,
                                            body.variables or {})
        check_generate_context(ask.prompt, body.system, state.settings)
        account_request(record, state.settings, body.model, ask.prompt)
    return PlannedCall(ask.call(), meter)


async def plan_chat(state: AppState, user: Principal, body: ChatRequest,
                    record: AuditRecord) -> PlannedCall:
    asked = [m.model_dump() for m in body.messages]
    ask = Ask("chat", body.model, body.options, messages=asked)
    meter = await prepare(state, user, ask, record)
    if body.context_id is None and not body.store:
        return PlannedCall(ask.call(), meter)

    earlier: list[ChatMessage] = []
    if body.context_id is None:
        context_id = conversations.new_id()
    else:
        context_id = body.context_id
        earlier = await conversations.history(state.sessions, user.sub, context_id)
        keep = state.settings.proxy_max_history_messages
        earlier = earlier[-keep:] if keep else []
    history = [m.model_dump() for m in earlier]
    check_chat_context(history, asked, state.settings)
    ask.messages = history + asked

    async def store_turn(completion: Completion) -> None:
        await conversations.save_turn(
            state.sessions, user.sub, context_id, body.model, list(body.messages),
            completion.text
        )

    return PlannedCall(ask.call(), meter, store_turn, context_id)
