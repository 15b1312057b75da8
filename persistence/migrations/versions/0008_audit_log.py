"""audit_log: who changed roles, refunded, changed an event's status or checked a ticket in

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-03 14:25:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "audit_log",
        sa.Column("id", postgresql.UUID(), primary_key=True),
        sa.Column(
            "at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False
        ),
        sa.Column("actor_id", postgresql.UUID(), nullable=True),
        sa.Column("actor_role", sa.String(length=24), nullable=True),
        sa.Column("client", sa.String(length=64), nullable=True),
        sa.Column("action", sa.String(length=64), nullable=False),
        sa.Column("subject", sa.String(length=128), nullable=False),
        sa.Column("detail", postgresql.JSONB(), nullable=False),
    )
    op.create_index("audit_log_at", "audit_log", ["at"])
    op.create_index("audit_log_action_at", "audit_log", ["action", "at"])


def downgrade() -> None:
    op.drop_table("audit_log")
