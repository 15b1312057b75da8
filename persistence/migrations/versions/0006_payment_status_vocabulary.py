"""payments: status is onsale's word (pending, succeeded, failed, canceled)

A payment used to be recorded with whatever status Stripe gave the new
PaymentIntent (requires_payment_method, requires_confirmation, …); onsale's
vocabulary calls all of those ``pending``, and a CHECK keeps it so, as on
every other status column.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02 20:30:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

KNOWN = "status IN ('pending', 'succeeded', 'failed', 'canceled')"


def upgrade() -> None:
    op.execute(f"UPDATE payments SET status = 'pending' WHERE NOT ({KNOWN})")
    op.create_check_constraint("status_known", "payments", KNOWN)


def downgrade() -> None:
    op.drop_constraint("status_known", "payments", type_="check")
