"""Publishing an event: its seat map in Postgres, then its inventory in Redis.

Publishing writes Postgres first — the event on sale, every seat of its seated
sections — and only then loads the inventory into Redis, so anything Redis
sells has a row to land on and Redis can always be rebuilt from here.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, Protocol

from sqlalchemy import func, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from engine.model import GeneralSection, SeatedSection, seat_id
from engine.model import Section as InventorySection
from persistence.models import Event, EventQueue, Seat, Section
from persistence.queues import queue_record
from sales.vocabulary import EventStatus, SectionKind


class InventoryLoader(Protocol):
    """The engine client, or its scripts directly (tools and benchmarks)."""

    async def load_inventory(
        self,
        event_id: str,
        sections: Sequence[InventorySection],
        *,
        status: EventStatus = ...,
        max_per_customer: int = ...,
        max_held_per_customer: int = ...,
    ) -> bool: ...

    async def queue(self, event_id: str, action: str, *args: Any) -> dict[str, Any]: ...


class PublishError(Exception):
    def __init__(self, code: str, detail: str) -> None:
        super().__init__(detail)
        self.code = code


async def inventory_of(conn: AsyncConnection, event_id: str) -> list[InventorySection]:
    rows = (
        await conn.execute(
            select(
                Section.code, Section.kind, Section.rows, Section.seats_per_row, Section.capacity
            )
            .where(Section.event_id == event_id)
            .order_by(Section.code)
        )
    ).all()
    return [
        SeatedSection(r.code, r.rows, r.seats_per_row)
        if r.kind == SectionKind.SEATED
        else GeneralSection(r.code, r.capacity)
        for r in rows
    ]


async def publish_event(db: AsyncEngine, engine: InventoryLoader, event_id: str) -> None:
    """Puts a draft (or already published) event on sale: Postgres, then Redis."""
    async with db.begin() as conn:
        event = (
            await conn.execute(
                select(Event.status, Event.max_tickets_per_customer, Event.max_held_per_customer)
                .where(Event.id == event_id)
                .with_for_update()
            )
        ).one_or_none()
        if event is None:
            raise PublishError("not_found", f"no event {event_id}")
        if event.status not in (EventStatus.DRAFT, EventStatus.ON_SALE):
            raise PublishError("invalid_state", f"event is {event.status}")
        sections = await inventory_of(conn, event_id)
        if not sections:
            raise PublishError("no_sections", "an event needs a section before it goes on sale")
        room = (
            await conn.execute(select(EventQueue).where(EventQueue.event_id == event_id))
        ).one_or_none()
        await _write_seats(conn, event_id)
        await conn.execute(
            update(Event)
            .where(Event.id == event_id)
            .values(
                status=EventStatus.ON_SALE,
                published_at=func.coalesce(Event.published_at, datetime.now(UTC)),
            )
        )
    if room is not None:  # first: the inventory loads with holds needing a pass
        await engine.queue(event_id, "configure", queue_record(room).engine_settings())
    await engine.load_inventory(
        event_id,
        sections,
        status=EventStatus.ON_SALE,
        max_per_customer=event.max_tickets_per_customer,
        max_held_per_customer=event.max_held_per_customer,
    )


async def _write_seats(conn: AsyncConnection, event_id: str) -> None:
    seated = (
        await conn.execute(
            select(Section.id, Section.code, Section.rows, Section.seats_per_row).where(
                Section.event_id == event_id, Section.kind == SectionKind.SEATED
            )
        )
    ).all()
    for section in seated:
        values = [
            {
                "event_id": event_id,
                "id": seat_id(section.code, row, number),
                "section_id": section.id,
                "row": row,
                "number": number,
            }
            for row in range(1, section.rows + 1)
            for number in range(1, section.seats_per_row + 1)
        ]
        for start in range(0, len(values), 5000):
            await conn.execute(insert(Seat).on_conflict_do_nothing(), values[start : start + 5000])
