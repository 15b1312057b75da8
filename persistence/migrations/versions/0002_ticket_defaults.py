"""tickets: id and status defaults in the database

The outbox writer COPYs tickets without an id or status, so Postgres makes
them: no uuid4() per ticket in the writer's hot loop. Its foreign key to
events goes: every ticket already references its order (which references the
event) and, when seated, its seat (keyed by event), and the check per ticket
cost the writer about a fifth of its COPY time.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22 21:50:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.alter_column("tickets", "id", server_default=sa.text("gen_random_uuid()"))
    op.alter_column("tickets", "status", server_default=sa.text("'valid'"))
    op.drop_constraint("tickets_event_id_fkey", "tickets", type_="foreignkey")


def downgrade() -> None:
    op.create_foreign_key("tickets_event_id_fkey", "tickets", "events", ["event_id"], ["id"])
    op.alter_column("tickets", "status", server_default=None)
    op.alter_column("tickets", "id", server_default=None)
