"""Database tables (SQLAlchemy 2 declarative). Schema changes go through Alembic migrations."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.engine.default import DefaultExecutionContext
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every database.

    Postgres keeps the offset; SQLite keeps none and would compare `…+05:00` as local clock
    time. So values are converted to UTC on the way in (naive ones are taken as UTC), and come
    back marked as UTC.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        value = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect
                             ) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    pass


def _context_id_default(context: DefaultExecutionContext) -> str:
    # SQLAlchemy leaves this method unannotated; it returns the row's parameters as a dict.
    parameters = context.get_current_parameters()  # type: ignore[no-untyped-call]
    return str(parameters["id"])


class Conversation(Base):
    """One user's stored chat.

    `id` is the server's own key (random, made by the server; what messages refer to) and is
    never shown. `context_id` is the name the API knows it by, unique only among its owner's
    conversations: a caller's id names a conversation in the caller's own space, so another
    user's id reveals nothing and cannot be taken. Rows from before revision 0004 have
    `context_id` equal to their old global `id`.
    """

    __tablename__ = "conversations"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    owner: Mapped[str] = mapped_column(String(255), nullable=False)
    # Not given: named by its key, as the rows from before revision 0004 are.
    context_id: Mapped[str] = mapped_column(String(64), nullable=False,
                                            default=_context_id_default)
    model: Mapped[str] = mapped_column(String(200), nullable=False)
    title: Mapped[str] = mapped_column(String(200), nullable=False, default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)

    __table_args__ = (
        Index("ix_conversations_owner_updated", "owner", "updated_at"),
        Index("ix_conversations_owner_context_id", "owner", "context_id", unique=True),
    )


class Message(Base):
    __tablename__ = "messages"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    conversation_id: Mapped[str] = mapped_column(
        String(64), ForeignKey("conversations.id", ondelete="CASCADE"), nullable=False, index=True
    )
    role: Mapped[str] = mapped_column(String(16), nullable=False)
    content: Mapped[str] = mapped_column(Text, nullable=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class AuditEntry(Base):
    __tablename__ = "audit_log"

    # The server's id for the request (unique); the caller's own id is `correlation_id`.
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)
    correlation_id: Mapped[str | None] = mapped_column(String(64))
    user: Mapped[str | None] = mapped_column(String(255))
    role: Mapped[str | None] = mapped_column(String(16))
    client: Mapped[str | None] = mapped_column(String(64))
    endpoint: Mapped[str] = mapped_column(String(100), nullable=False)
    model: Mapped[str | None] = mapped_column(String(200))
    prompt_chars: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    prompt_sha256: Mapped[str | None] = mapped_column(String(64))
    prompt_text: Mapped[str | None] = mapped_column(Text)
    prompt_tokens: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    completion_tokens: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    ttft_ms: Mapped[float | None] = mapped_column(Float)
    duration_ms: Mapped[float] = mapped_column(Float, nullable=False, default=0.0)
    upstream_ms: Mapped[float] = mapped_column(Float, nullable=False, default=0.0)
    status: Mapped[int] = mapped_column(Integer, nullable=False)
    error: Mapped[str | None] = mapped_column(String(500))
    cached: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
    dialect: Mapped[str] = mapped_column(String(16), nullable=False, default="llm",
                                         server_default="llm")
    # The proxy-managed API key the request was made with (its id, never the secret).
    api_key_id: Mapped[str | None] = mapped_column(String(32))
    # The caller's team when the request was admitted: what rebuilds a team's spend.
    team: Mapped[str | None] = mapped_column(String(64))

    __table_args__ = (
        Index("ix_audit_log_user_at", "user", "at"),
        Index("ix_audit_log_team_at", "team", "at"),
        Index("ix_audit_log_at", "at"),
        Index("ix_audit_log_correlation_id", "correlation_id"),
        Index("ix_audit_log_api_key_id", "api_key_id"),
    )


class PromptTemplate(Base):
    __tablename__ = "prompt_templates"

    name: Mapped[str] = mapped_column(String(100), primary_key=True)
    template: Mapped[str] = mapped_column(Text, nullable=False)
    description: Mapped[str] = mapped_column(String(500), nullable=False, default="")
    created_by: Mapped[str] = mapped_column(String(255), nullable=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class ApiKey(Base):
    """A proxy-managed API key (`sk-llm-…`): it acts as its owner, within its own limits.

    Only the secret's SHA-256 is stored; `prefix` (the secret's first characters, no use to an
    attacker) lets people tell their keys apart. `role` is fixed when the key is made: `user`,
    unless an admin made it `admin`. NULL limits mean the owner's own.
    """

    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    owner: Mapped[str] = mapped_column(String(255), nullable=False)
    name: Mapped[str] = mapped_column(String(100), nullable=False)
    role: Mapped[str] = mapped_column(String(16), nullable=False, default="user")
    prefix: Mapped[str] = mapped_column(String(32), nullable=False)
    secret_sha256: Mapped[str] = mapped_column(String(64), nullable=False, unique=True)
    created_by: Mapped[str] = mapped_column(String(255), nullable=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    allowed_models: Mapped[list[str] | None] = mapped_column(JSON)
    rate_limit_per_minute: Mapped[int | None] = mapped_column(Integer)
    concurrency_limit: Mapped[int | None] = mapped_column(Integer)
    token_limit_per_minute: Mapped[int | None] = mapped_column(Integer)
    token_limit_per_day: Mapped[int | None] = mapped_column(BigInteger)

    __table_args__ = (Index("ix_api_keys_owner", "owner"),)


class TokenDenial(Base):
    """A JWT deny-list entry: one token by its `jti`, or every token of `subject` issued before
    `issued_before`. `expires_at`: when the entry can no longer match a valid token (NULL:
    never), after which it is ignored."""

    __tablename__ = "token_denials"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    jti: Mapped[str | None] = mapped_column(String(255))
    subject: Mapped[str | None] = mapped_column(String(255))
    issued_before: Mapped[datetime | None] = mapped_column(UTCDateTime())
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    reason: Mapped[str] = mapped_column(String(500), nullable=False, default="")
    created_by: Mapped[str] = mapped_column(String(255), nullable=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class Team(Base):
    """A named group of users that shares a budget. A user is in at most one team, so that a
    request is charged to one team and the audit row can say which."""

    __tablename__ = "teams"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    description: Mapped[str] = mapped_column(String(500), nullable=False, default="")
    created_by: Mapped[str] = mapped_column(String(255), nullable=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class TeamMember(Base):
    __tablename__ = "team_members"

    user: Mapped[str] = mapped_column(String(255), primary_key=True)
    team: Mapped[str] = mapped_column(
        String(64), ForeignKey("teams.name", ondelete="CASCADE"), nullable=False, index=True)
    added_by: Mapped[str] = mapped_column(String(255), nullable=False)
    added_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class BudgetRow(Base):
    """What a user, an API key or a team may spend per day, week or month, in the cost
    model's money (PROXY_COST_MODE); past `soft_limit` the proxy warns, at `amount` it refuses."""

    __tablename__ = "budgets"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    scope: Mapped[str] = mapped_column(String(8), nullable=False)
    subject: Mapped[str] = mapped_column(String(255), nullable=False)
    period: Mapped[str] = mapped_column(String(8), nullable=False)
    amount: Mapped[float] = mapped_column(Float, nullable=False)
    soft_limit: Mapped[float | None] = mapped_column(Float)
    updated_by: Mapped[str] = mapped_column(String(255), nullable=False)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)

    __table_args__ = (
        Index("ix_budgets_scope_subject_period", "scope", "subject", "period", unique=True),
    )
