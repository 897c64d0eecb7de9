"""Conversation ids are per user: the caller's id becomes `context_id`, unique per owner.

`conversations.id` stays the primary key that messages refer to, and becomes the server's own
key (new rows get a random one). Existing rows keep working: their `context_id` is their old id,
so each owner still reaches them under the id they used.

Downgrade drops `context_id`: conversations created since are then known by their server key.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # NOT NULL with a default, then filled: SQLite cannot alter a column afterwards, and a batch
    # rebuild of `conversations` would drop the table under `messages` (foreign keys are on).
    op.add_column("conversations", sa.Column("context_id", sa.String(64), nullable=False,
                                             server_default=""))
    op.execute("UPDATE conversations SET context_id = id")
    if op.get_bind().dialect.name != "sqlite":
        op.alter_column("conversations", "context_id", server_default=None,
                        existing_type=sa.String(64), existing_nullable=False)
    op.create_index("ix_conversations_owner_context_id", "conversations",
                    ["owner", "context_id"], unique=True)


def downgrade() -> None:
    op.drop_index("ix_conversations_owner_context_id", table_name="conversations")
    op.drop_column("conversations", "context_id")
