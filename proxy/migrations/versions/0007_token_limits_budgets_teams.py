"""Token limits of API keys, budgets, teams, and the team each audit row was charged to.

`api_keys.token_limit_per_minute/_per_day`: a key's own token windows (NULL: its owner's
alone). `teams` and `team_members`: named groups of users sharing a budget, a user in at most
one. `budgets`: what a user, a key or a team may spend per day, week or month.
`audit_log.team`: the caller's team when the request was admitted, so that a team's spend can be
rebuilt from the audit log; rows written before this revision have none.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-08
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("api_keys") as batch:
        batch.add_column(sa.Column("token_limit_per_minute", sa.Integer))
        batch.add_column(sa.Column("token_limit_per_day", sa.BigInteger))
    op.create_table(
        "teams",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("description", sa.String(500), nullable=False),
        sa.Column("created_by", sa.String(255), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "team_members",
        sa.Column("user", sa.String(255), primary_key=True),
        sa.Column("team", sa.String(64), sa.ForeignKey("teams.name", ondelete="CASCADE"),
                  nullable=False),
        sa.Column("added_by", sa.String(255), nullable=False),
        sa.Column("added_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_team_members_team", "team_members", ["team"])
    op.create_table(
        "budgets",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("scope", sa.String(8), nullable=False),
        sa.Column("subject", sa.String(255), nullable=False),
        sa.Column("period", sa.String(8), nullable=False),
        sa.Column("amount", sa.Float, nullable=False),
        sa.Column("soft_limit", sa.Float),
        sa.Column("updated_by", sa.String(255), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_budgets_scope_subject_period", "budgets",
                    ["scope", "subject", "period"], unique=True)
    with op.batch_alter_table("audit_log") as batch:
        batch.add_column(sa.Column("team", sa.String(64)))
        batch.create_index("ix_audit_log_team_at", ["team", "at"])


def downgrade() -> None:
    with op.batch_alter_table("audit_log") as batch:
        batch.drop_index("ix_audit_log_team_at")
        batch.drop_column("team")
    op.drop_index("ix_budgets_scope_subject_period", table_name="budgets")
    op.drop_table("budgets")
    op.drop_index("ix_team_members_team", table_name="team_members")
    op.drop_table("team_members")
    op.drop_table("teams")
    with op.batch_alter_table("api_keys") as batch:
        batch.drop_column("token_limit_per_day")
        batch.drop_column("token_limit_per_minute")
