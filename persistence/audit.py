"""The audit log: who did what, when, from where (``GET /admin/audit``)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import insert, select
from sqlalchemy.ext.asyncio import AsyncEngine

from persistence.models import AuditEntry


@dataclass(frozen=True)
class Entry:
    id: uuid.UUID
    at: datetime
    actor_id: uuid.UUID | None
    actor_role: str | None
    client: str | None
    action: str
    subject: str
    detail: dict[str, Any]


async def record(
    db: AsyncEngine,
    *,
    actor_id: uuid.UUID | None,
    actor_role: str | None,
    client: str | None,
    action: str,
    subject: str,
    detail: dict[str, Any],
) -> None:
    async with db.begin() as conn:
        await conn.execute(
            insert(AuditEntry).values(
                id=uuid.uuid4(),
                actor_id=actor_id,
                actor_role=actor_role,
                client=client,
                action=action,
                subject=subject,
                detail=detail,
            )
        )


async def entries(
    db: AsyncEngine, *, action: str | None = None, subject: str | None = None, limit: int = 100
) -> list[Entry]:
    """Newest first."""
    query = select(AuditEntry).order_by(AuditEntry.at.desc(), AuditEntry.id).limit(limit)
    if action is not None:
        query = query.where(AuditEntry.action == action)
    if subject is not None:
        query = query.where(AuditEntry.subject == subject)
    async with db.connect() as conn:
        rows = (await conn.execute(query)).all()
    return [
        Entry(r.id, r.at, r.actor_id, r.actor_role, r.client, r.action, r.subject, r.detail)
        for r in rows
    ]
