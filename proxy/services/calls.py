"""Turning a validated generate/chat request into an upstream call plus what to do after it.

Shared by the HTTP routes and the WebSocket, so both apply the same limits and history rules.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from proxy.audit.record import AuditRecord
from proxy.core.security import Principal
from proxy.core.settings import Settings
from proxy.core.state import AppState, full_model_name
from proxy.schemas import ChatMessage, ChatRequest, GenerateRequest
from proxy.services import conversations, templates
from proxy.services.relay import Completion, UpstreamCall, chat_call, generate_call
from proxy.services.validation import check_chat, check_generate, check_prompt_text

AfterCompletion = Callable[[Completion], Awaitable[None]]


@dataclass
class PlannedCall:
    call: UpstreamCall
    prompt_text: str
    after: AfterCompletion | None = None
    context_id: str | None = None

    def account_request(self, record: AuditRecord, settings: Settings) -> None:
        record.model = full_model_name(self.call.model)
        record.set_prompt(self.prompt_text, settings.proxy_audit_store_prompts)

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


async def plan_generate(state: AppState, body: GenerateRequest) -> PlannedCall:
    options = check_generate(body, state.settings)
    prompt = body.prompt or ""
    if body.template is not None:
        prompt = await templates.render(state.sessions, body.template, body.variables or {})
        check_prompt_text(prompt, state.settings)
    return PlannedCall(generate_call(body.model, prompt, body.system, options), prompt)


async def plan_chat(state: AppState, user: Principal, body: ChatRequest) -> PlannedCall:
    options = check_chat(body, state.settings)
    context_id = body.context_id
    prompt_text = "\n".join(m.content for m in body.messages)
    if context_id is None:
        return PlannedCall(chat_call(body.model, body.messages, options), prompt_text)

    earlier = await conversations.history(state.sessions, user.sub, context_id)
    keep = state.settings.proxy_max_history_messages
    earlier = earlier[-keep:] if keep else []
    asked: list[ChatMessage] = list(body.messages)

    async def store_turn(completion: Completion) -> None:
        await conversations.save_turn(
            state.sessions, user.sub, context_id, body.model, asked, completion.text
        )

    return PlannedCall(chat_call(body.model, earlier + asked, options), prompt_text, store_turn,
                       context_id)
