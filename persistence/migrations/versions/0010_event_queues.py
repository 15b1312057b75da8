"""event_queues: each event's waiting room settings

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-03 17:10:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "event_queues",
        sa.Column("event_id", sa.String(64), sa.ForeignKey("events.id"), primary_key=True),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("opens_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("admit_per_minute", sa.Integer(), nullable=True),
        sa.Column("max_active", sa.Integer(), nullable=False),
        sa.Column("pass_ttl_s", sa.Integer(), nullable=False),
        sa.Column("pre_open_order", sa.String(8), server_default="random", nullable=False),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.CheckConstraint(
            "admit_per_minute IS NULL OR admit_per_minute > 0", name="rate_positive"
        ),
        sa.CheckConstraint("max_active > 0", name="max_active_positive"),
        sa.CheckConstraint("pass_ttl_s > 0", name="pass_ttl_positive"),
        sa.CheckConstraint("pre_open_order IN ('random', 'fifo')", name="order_known"),
    )


def downgrade() -> None:
    op.drop_table("event_queues")
