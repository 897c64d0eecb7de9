"""The audit log keeps a caller's own request id apart from the server's.

`audit_log.id` is the server's id for the request. The id a caller sends (`X-Request-ID`) is
kept, for tracing only, in `correlation_id`: nullable, not unique, indexed for the audit filter.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-30
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("audit_log") as batch:
        batch.add_column(sa.Column("correlation_id", sa.String(64), nullable=True))
        batch.create_index("ix_audit_log_correlation_id", ["correlation_id"])


def downgrade() -> None:
    with op.batch_alter_table("audit_log") as batch:
        batch.drop_index("ix_audit_log_correlation_id")
        batch.drop_column("correlation_id")
