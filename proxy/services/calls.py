"""Turning a validated generate/chat request into an upstream call plus what to do after it.

Shared by the HTTP routes and the WebSocket, so both apply the same limits and history rules.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from proxy.core.security import Principal
from proxy.core.state import AppState
from proxy.schemas import ChatMessage, ChatRequest, GenerateRequest
from proxy.services import conversations
from proxy.services.relay import Completion, UpstreamCall, chat_call, generate_call
from proxy.services.validation import check_chat, check_generate

AfterCompletion = Callable[[Completion], Awaitable[None]]


@dataclass
class PlannedCall:
    call: UpstreamCall
    after: AfterCompletion | None = None
    context_id: str | None = None


def plan_generate(state: AppState, body: GenerateRequest) -> PlannedCall:
    options = check_generate(body, state.settings)
    return PlannedCall(generate_call(body.model, body.prompt, body.system, options))


async def plan_chat(state: AppState, user: Principal, body: ChatRequest) -> PlannedCall:
    options = check_chat(body, state.settings)
    context_id = body.context_id
    if context_id is None:
        return PlannedCall(chat_call(body.model, body.messages, options))

    earlier = await conversations.history(state.sessions, user.sub, context_id)
    keep = state.settings.proxy_max_history_messages
    earlier = earlier[-keep:] if keep else []
    asked: list[ChatMessage] = list(body.messages)

    async def store_turn(completion: Completion) -> None:
        await conversations.save_turn(
            state.sessions, user.sub, context_id, body.model, asked, completion.text
        )

    return PlannedCall(chat_call(body.model, earlier + asked, options), store_turn, context_id)
