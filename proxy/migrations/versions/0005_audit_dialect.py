"""The audit log records which API dialect each request was made in.

`audit_log.dialect`: `llm` (the proxy's own `/api/llm/*`, the web page, the WebSocket), `openai`
(`/v1/*`) or `ollama` (`/ollama/api/*`). Rows written before this revision were all made in the
proxy's own dialect, so they get `llm`.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-30
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("audit_log") as batch:
        batch.add_column(sa.Column("dialect", sa.String(16), nullable=False,
                                   server_default="llm"))


def downgrade() -> None:
    with op.batch_alter_table("audit_log") as batch:
        batch.drop_column("dialect")
