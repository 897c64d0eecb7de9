"""Audit log and prompt templates.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "audit_log",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("user", sa.String(255)),
        sa.Column("role", sa.String(16)),
        sa.Column("client", sa.String(64)),
        sa.Column("endpoint", sa.String(100), nullable=False),
        sa.Column("model", sa.String(200)),
        sa.Column("prompt_chars", sa.Integer, nullable=False, server_default="0"),
        sa.Column("prompt_sha256", sa.String(64)),
        sa.Column("prompt_text", sa.Text),
        sa.Column("prompt_tokens", sa.Integer, nullable=False, server_default="0"),
        sa.Column("completion_tokens", sa.Integer, nullable=False, server_default="0"),
        sa.Column("ttft_ms", sa.Float),
        sa.Column("duration_ms", sa.Float, nullable=False, server_default="0"),
        sa.Column("upstream_ms", sa.Float, nullable=False, server_default="0"),
        sa.Column("status", sa.Integer, nullable=False),
        sa.Column("error", sa.String(500)),
        sa.Column("cached", sa.Boolean, nullable=False, server_default=sa.false()),
    )
    op.create_index("ix_audit_log_user_at", "audit_log", ["user", "at"])
    op.create_index("ix_audit_log_at", "audit_log", ["at"])
    op.create_table(
        "prompt_templates",
        sa.Column("name", sa.String(100), primary_key=True),
        sa.Column("template", sa.Text, nullable=False),
        sa.Column("description", sa.String(500), nullable=False, server_default=""),
        sa.Column("created_by", sa.String(255), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("prompt_templates")
    op.drop_index("ix_audit_log_at", table_name="audit_log")
    op.drop_index("ix_audit_log_user_at", table_name="audit_log")
    op.drop_table("audit_log")
