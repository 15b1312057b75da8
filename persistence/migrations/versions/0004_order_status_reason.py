"""orders: why an order ended as it did (a late payment refunded, a cancelled payment)

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-22 23:20:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("orders", sa.Column("status_reason", sa.String(length=64), nullable=True))


def downgrade() -> None:
    op.drop_column("orders", "status_reason")
