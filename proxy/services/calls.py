"""Turning a validated generate/chat request into an upstream call plus what to do after it.

Shared by the HTTP routes and the WebSocket, so both apply the same limits and history rules.
The order is the point: checks that cost nothing (the request's own fields against settings)
come first, then the user's rate limit and concurrency slot, and only then anything that costs
the proxy something (a database read, a template render, a look-up upstream): a user over
their limit cannot make the proxy work, nor learn anything from how it fails.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from proxy.audit.record import AuditRecord
from proxy.core.errors import RequestInvalid
from proxy.core.model_names import full_model_name
from proxy.core.security import Principal
from proxy.core.settings import Settings
from proxy.schemas import ChatMessage, ChatRequest, GenerateRequest, GenerationOptions
from proxy.services import conversations, templates
from proxy.services.context_lengths import DEFAULT_NUM_CTX_CAP
from proxy.services.relay import Completion, UpstreamCall, chat_call, generate_call
from proxy.services.state import AppState
from proxy.services.validation import (
    check_chat,
    check_chat_context,
    check_generate,
    check_generate_context,
)

AfterCompletion = Callable[[Completion], Awaitable[None]]


@dataclass
class PlannedCall:
    call: UpstreamCall
    after: AfterCompletion | None = None
    context_id: str | None = None

    @staticmethod
    def account_completion(record: AuditRecord, completion: Completion) -> None:
        record.prompt_tokens = completion.prompt_tokens
        record.completion_tokens = completion.completion_tokens
        record.ttft_ms = completion.first_token_ms
        record.upstream_ms = completion.upstream_ms
        record.tokens_per_second = completion.tokens_per_second


async def admit(state: AppState, user: Principal, record: AuditRecord) -> None:
    """Apply the user's rate limit and take a concurrency slot, released by `finish`."""
    decision = await state.limiter.hit(user)
    release = await state.limiter.acquire(user, record.id)
    record.on_finish.append(release)
    if decision is not None:
        record.response_headers.update(decision.headers())


async def check_num_ctx(state: AppState, model: str, options: GenerationOptions) -> None:
    """`num_ctx` within PROXY_MAX_NUM_CTX, or else within the model's own context length."""
    requested = options.num_ctx
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


async def plan_generate(state: AppState, user: Principal, body: GenerateRequest,
                        record: AuditRecord) -> PlannedCall:
    account_request(record, state.settings, body.model, body.prompt)
    options = check_generate(body, state.settings)
    await admit(state, user, record)
    await check_num_ctx(state, body.model, options)
    prompt = body.prompt or ""
    if body.template is not None:
        prompt = await templates.render(state.sessions, state.templates, body.template,
                                        body.variables or {})
        check_generate_context(prompt, body.system, state.settings)
        account_request(record, state.settings, body.model, prompt)
    return PlannedCall(generate_call(body.model, prompt, body.system, options))


async def plan_chat(state: AppState, user: Principal, body: ChatRequest,
                    record: AuditRecord) -> PlannedCall:
    account_request(record, state.settings, body.model,
                    "\n".join(m.content for m in body.messages))
    options = check_chat(body, state.settings)
    await admit(state, user, record)
    await check_num_ctx(state, body.model, options)
    if body.context_id is None and not body.store:
        return PlannedCall(chat_call(body.model, body.messages, options))

    earlier: list[ChatMessage] = []
    if body.context_id is None:
        context_id = conversations.new_id()
    else:
        context_id = body.context_id
        earlier = await conversations.history(state.sessions, user.sub, context_id)
        keep = state.settings.proxy_max_history_messages
        earlier = earlier[-keep:] if keep else []
    asked: list[ChatMessage] = list(body.messages)
    check_chat_context(earlier, asked, state.settings)

    async def store_turn(completion: Completion) -> None:
        await conversations.save_turn(
            state.sessions, user.sub, context_id, body.model, asked, completion.text
        )

    return PlannedCall(chat_call(body.model, earlier + asked, options), store_turn, context_id)
