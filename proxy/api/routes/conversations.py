"""A user's stored conversations (chats given a `context_id`, or `store: true`), by the id
they have in that user's own space."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Response

from proxy.api.deps import CurrentUser, StateDep
from proxy.api.routes.llm import ERRORS
from proxy.schemas import CONTEXT_ID_PATTERN, ConversationDetail, ConversationList
from proxy.services import conversations

router = APIRouter(prefix="/api/llm/conversations", tags=["conversations"])

ConversationId = Annotated[str, Path(pattern=CONTEXT_ID_PATTERN)]


@router.get("", response_model=ConversationList, responses=ERRORS,
            summary="Your conversations, most recently updated first")
async def list_conversations(
    state: StateDep, user: CurrentUser,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> ConversationList:
    return ConversationList(
        conversations=await conversations.list_for(state.sessions, user.sub, limit, offset)
    )


@router.get("/{conversation_id}", response_model=ConversationDetail, responses=ERRORS,
            summary="One of your conversations with its messages")
async def get_conversation(
    conversation_id: ConversationId, state: StateDep, user: CurrentUser
) -> ConversationDetail:
    return await conversations.detail(state.sessions, user.sub, conversation_id)


@router.delete("/{conversation_id}", status_code=204, responses=ERRORS,
               summary="Delete one of your conversations")
async def delete_conversation(
    conversation_id: ConversationId, state: StateDep, user: CurrentUser
) -> Response:
    await conversations.remove(state.sessions, user.sub, conversation_id)
    return Response(status_code=204)
