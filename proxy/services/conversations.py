"""Conversation history, each conversation in its owner's own space of ids.

A conversation is found by (owner, context_id), never by the id alone: a caller's id names a
conversation of the caller's only, so using another user's id is exactly like using a free one
(it starts a conversation of your own), and an id cannot be squatted. Ids the server makes
(`new_id`) are random 128-bit values; the caller may also name a conversation itself.

A turn is stored only once the reply is complete, in one transaction with the messages that
asked for it: a failed or cancelled generation leaves the history as it was, so a retry does
not duplicate the question.
"""

from __future__ import annotations

import secrets

from sqlalchemy import delete, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from proxy.core.errors import NotFound
from proxy.core.models import Conversation, Message, utcnow
from proxy.schemas import (
    ChatMessage,
    ConversationDetail,
    ConversationSummary,
    StoredMessage,
)

TITLE_CHARS = 80


def new_id() -> str:
    """An unguessable id (also the server's own key for every new conversation)."""
    return secrets.token_hex(16)


def _not_found(context_id: str) -> NotFound:
    return NotFound(f"conversation '{context_id}' not found")


async def _find(session: AsyncSession, owner: str, context_id: str) -> Conversation | None:
    conversation: Conversation | None = await session.scalar(
        select(Conversation).where(Conversation.owner == owner,
                                   Conversation.context_id == context_id)
    )
    return conversation


async def _messages(session: AsyncSession, conversation: Conversation) -> list[Message]:
    rows = await session.scalars(
        select(Message).where(Message.conversation_id == conversation.id).order_by(Message.id)
    )
    return list(rows)


async def history(
    factory: async_sessionmaker[AsyncSession], owner: str, context_id: str
) -> list[ChatMessage]:
    """Earlier turns of the owner's conversation, oldest first; empty for a new one."""
    async with factory() as session:
        conversation = await _find(session, owner, context_id)
        if conversation is None:
            return []
        return [ChatMessage.model_validate({"role": m.role, "content": m.content})
                for m in await _messages(session, conversation)]


async def save_turn(
    factory: async_sessionmaker[AsyncSession],
    owner: str,
    context_id: str,
    model: str,
    asked: list[ChatMessage],
    reply: str,
) -> None:
    try:
        await _save_turn(factory, owner, context_id, model, asked, reply)
    except IntegrityError:
        # The owner's other request created this conversation between our read and our
        # insert; it is theirs as well, so the turn goes into it.
        await _save_turn(factory, owner, context_id, model, asked, reply)


async def _save_turn(
    factory: async_sessionmaker[AsyncSession],
    owner: str,
    context_id: str,
    model: str,
    asked: list[ChatMessage],
    reply: str,
) -> None:
    async with factory() as session, session.begin():
        conversation = await _find(session, owner, context_id)
        now = utcnow()
        if conversation is None:
            first_user = next((m.content for m in asked if m.role == "user"), "")
            conversation = Conversation(
                id=new_id(), owner=owner, context_id=context_id, model=model,
                title=" ".join(first_user.split())[:TITLE_CHARS], created_at=now, updated_at=now,
            )
            session.add(conversation)
            await session.flush()
        conversation.model = model
        conversation.updated_at = now
        for message in asked:
            session.add(Message(conversation_id=conversation.id, role=message.role,
                                content=message.content, created_at=now))
        session.add(Message(conversation_id=conversation.id, role="assistant", content=reply,
                            created_at=now))


async def list_for(
    factory: async_sessionmaker[AsyncSession], owner: str, limit: int = 100, offset: int = 0
) -> list[ConversationSummary]:
    counts = (
        select(Message.conversation_id, func.count(Message.id).label("n"))
        .group_by(Message.conversation_id)
        .subquery()
    )
    query = (
        select(Conversation, func.coalesce(counts.c.n, 0))
        .outerjoin(counts, counts.c.conversation_id == Conversation.id)
        .where(Conversation.owner == owner)
        .order_by(Conversation.updated_at.desc(), Conversation.context_id)
        .limit(limit)
        .offset(offset)
    )
    async with factory() as session:
        rows = (await session.execute(query)).all()
    return [
        ConversationSummary(id=c.context_id, model=c.model, title=c.title,
                            created_at=c.created_at, updated_at=c.updated_at,
                            message_count=int(n))
        for c, n in rows
    ]


async def detail(
    factory: async_sessionmaker[AsyncSession], owner: str, context_id: str
) -> ConversationDetail:
    async with factory() as session:
        conversation = await _find(session, owner, context_id)
        if conversation is None:
            raise _not_found(context_id)
        messages = [StoredMessage(role=m.role, content=m.content, created_at=m.created_at)
                    for m in await _messages(session, conversation)]
    return ConversationDetail(id=conversation.context_id, model=conversation.model,
                              title=conversation.title, created_at=conversation.created_at,
                              updated_at=conversation.updated_at, messages=messages)


async def remove(
    factory: async_sessionmaker[AsyncSession], owner: str, context_id: str
) -> None:
    async with factory() as session, session.begin():
        conversation = await _find(session, owner, context_id)
        if conversation is None:
            raise _not_found(context_id)
        await session.execute(delete(Message).where(Message.conversation_id == conversation.id))
        await session.delete(conversation)
