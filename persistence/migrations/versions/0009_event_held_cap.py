"""events: a cap on what one customer holds at once (0: none, as before)

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-03 14:45:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "events",
        sa.Column("max_held_per_customer", sa.Integer(), server_default="0", nullable=False),
    )
    op.create_check_constraint("held_cap_not_negative", "events", "max_held_per_customer >= 0")


def downgrade() -> None:
    op.drop_constraint("held_cap_not_negative", "events", type_="check")
    op.drop_column("events", "max_held_per_customer")
