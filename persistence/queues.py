"""Waiting room settings per event (``event_queues``); who waits is Redis's."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncEngine

from persistence.models import EventQueue


@dataclass(frozen=True)
class QueueRecord:
    event_id: str
    enabled: bool
    opens_at: datetime
    admit_per_minute: int | None  # None: auto
    max_active: int
    pass_ttl_s: int
    pre_open_order: str = "random"

    def engine_settings(self, *, rebuilt: bool = False, reform_s: float = 0) -> dict[str, object]:
        """What lua/queue.lua's ``configure`` takes."""
        settings: dict[str, object] = {
            "on": self.enabled,
            "opens_at": int(self.opens_at.timestamp() * 1000),
            "order": self.pre_open_order,
            "apm": self.admit_per_minute or 0,
            "max_active": self.max_active,
            "pass_ttl_ms": self.pass_ttl_s * 1000,
        }
        if rebuilt:
            settings["rebuilt"] = True
            settings["reform_ms"] = int(reform_s * 1000)
        return settings


def queue_record(row: Any) -> QueueRecord:
    return QueueRecord(
        row.event_id,
        row.enabled,
        row.opens_at,
        row.admit_per_minute,
        row.max_active,
        row.pass_ttl_s,
        row.pre_open_order,
    )


async def get_queue(db: AsyncEngine, event_id: str) -> QueueRecord | None:
    async with db.connect() as conn:
        row = (
            await conn.execute(select(EventQueue).where(EventQueue.event_id == event_id))
        ).one_or_none()
    return None if row is None else queue_record(row)


async def put_queue(db: AsyncEngine, record: QueueRecord) -> None:
    values = {
        "event_id": record.event_id,
        "enabled": record.enabled,
        "opens_at": record.opens_at,
        "admit_per_minute": record.admit_per_minute,
        "max_active": record.max_active,
        "pass_ttl_s": record.pass_ttl_s,
        "pre_open_order": record.pre_open_order,
    }
    statement = insert(EventQueue).values(**values)
    statement = statement.on_conflict_do_update(
        index_elements=[EventQueue.event_id],
        set_={**{k: v for k, v in values.items() if k != "event_id"}, "updated_at": func.now()},
    )
    async with db.begin() as conn:
        await conn.execute(statement)
