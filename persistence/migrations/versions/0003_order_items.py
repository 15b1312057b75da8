"""orders: what was bought, until when it may be paid, one order per hold

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-22 22:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("orders", sa.Column("items", postgresql.JSONB(), nullable=True))
    op.add_column("orders", sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True))
    op.create_unique_constraint("orders_one_per_hold", "orders", ["hold_id"])


def downgrade() -> None:
    op.drop_constraint("orders_one_per_hold", "orders", type_="unique")
    op.drop_column("orders", "expires_at")
    op.drop_column("orders", "items")
