"""Conversation history: owned by one user, invisible (404) to everyone else.

A turn is stored only once the reply is complete, in one transaction with the messages that
asked for it: a failed or cancelled generation leaves the history as it was, so a retry does
not duplicate the question.
"""

from __future__ import annotations

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


def _not_found(conversation_id: str) -> NotFound:
    return NotFound(f"conversation '{conversation_id}' not found")


async def _owned(session: AsyncSession, owner: str, conversation_id: str) -> Conversation | None:
    conversation = await session.get(Conversation, conversation_id)
    if conversation is not None and conversation.owner != owner:
        # Same answer as "does not exist": another user's ids are not to be discovered.
        raise _not_found(conversation_id)
    return conversation


async def history(
    factory: async_sessionmaker[AsyncSession], owner: str, conversation_id: str
) -> list[ChatMessage]:
    """Earlier turns of a conversation, oldest first; empty for a new conversation id."""
    async with factory() as session:
        conversation = await _owned(session, owner, conversation_id)
        if conversation is None:
            return []
        rows = await session.scalars(
            select(Message).where(Message.conversation_id == conversation_id).order_by(Message.id)
        )
        return [ChatMessage.model_validate({"role": m.role, "content": m.content}) for m in rows]


async def save_turn(
    factory: async_sessionmaker[AsyncSession],
    owner: str,
    conversation_id: str,
    model: str,
    asked: list[ChatMessage],
    reply: str,
) -> None:
    async with factory() as session, session.begin():
        conversation = await _owned(session, owner, conversation_id)
        now = utcnow()
        if conversation is None:
            first_user = next((m.content for m in asked if m.role == "user"), "")
            conversation = Conversation(
                id=conversation_id, owner=owner, model=model,
                title=" ".join(first_user.split())[:TITLE_CHARS], created_at=now, updated_at=now,
            )
            session.add(conversation)
            try:
                await session.flush()
            except IntegrityError as exc:
                # Someone else created this id between our read and our insert.
                raise _not_found(conversation_id) from exc
        conversation.model = model
        conversation.updated_at = now
        for message in asked:
            session.add(Message(conversation_id=conversation_id, role=message.role,
                                content=message.content, created_at=now))
        session.add(Message(conversation_id=conversation_id, role="assistant", content=reply,
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
        .order_by(Conversation.updated_at.desc(), Conversation.id)
        .limit(limit)
        .offset(offset)
    )
    async with factory() as session:
        rows = (await session.execute(query)).all()
    return [
        ConversationSummary(id=c.id, model=c.model, title=c.title, created_at=c.created_at,
                            updated_at=c.updated_at, message_count=int(n))
        for c, n in rows
    ]


async def detail(
    factory: async_sessionmaker[AsyncSession], owner: str, conversation_id: str
) -> ConversationDetail:
    async with factory() as session:
        conversation = await _owned(session, owner, conversation_id)
        if conversation is None:
            raise _not_found(conversation_id)
        rows = await session.scalars(
            select(Message).where(Message.conversation_id == conversation_id).order_by(Message.id)
        )
        messages = [StoredMessage(role=m.role, content=m.content, created_at=m.created_at)
                    for m in rows]
    return ConversationDetail(id=conversation.id, model=conversation.model,
                              title=conversation.title, created_at=conversation.created_at,
                              updated_at=conversation.updated_at, messages=messages)


async def remove(
    factory: async_sessionmaker[AsyncSession], owner: str, conversation_id: str
) -> None:
    async with factory() as session, session.begin():
        conversation = await _owned(session, owner, conversation_id)
        if conversation is None:
            raise _not_found(conversation_id)
        await session.execute(delete(Message).where(Message.conversation_id == conversation_id))
        await session.delete(conversation)
