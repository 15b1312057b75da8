"""tickets: a random serial per ticket, signed into its token

A token names one issue of a ticket: a seat refunded and sold again gets a new
ticket with a new serial, so the old token is refused at the door.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-23 20:10:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SERIAL_DEFAULT = "substr(md5(gen_random_uuid()::text), 1, 16)"


def upgrade() -> None:
    op.add_column(
        "tickets",
        sa.Column(
            "serial", sa.String(length=16), server_default=sa.text(SERIAL_DEFAULT), nullable=False
        ),
    )


def downgrade() -> None:
    op.drop_column("tickets", "serial")
