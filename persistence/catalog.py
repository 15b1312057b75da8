"""Events and seat maps in Postgres, and publishing them to the engine.

Publishing writes Postgres first — the event on sale, every seat of its seated
sections — and only then loads the inventory into Redis, so anything Redis
sells has a row to land on and Redis can always be rebuilt from here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

from sqlalchemy import func, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from engine.model import GeneralSection, SeatedSection
from engine.model import Section as InventorySection
from persistence.models import Event, Seat, Section


class InventoryLoader(Protocol):
    """The engine client, or its scripts directly (tools and benchmarks)."""

    async def load_inventory(
        self,
        event_id: str,
        sections: Sequence[InventorySection],
        *,
        status: str = ...,
        max_per_customer: int = ...,
    ) -> bool: ...


@dataclass(frozen=True)
class SectionSpec:
    code: str
    name: str
    price_cents: int
    kind: str  # "seated" | "general"
    rows: int | None = None
    seats_per_row: int | None = None
    capacity: int | None = None


class PublishError(Exception):
    def __init__(self, code: str, detail: str) -> None:
        super().__init__(detail)
        self.code = code


async def add_event(
    db: AsyncEngine,
    event_id: str,
    *,
    name: str,
    venue: str,
    starts_at: datetime,
    currency: str,
    sections: Sequence[SectionSpec],
    hold_ttl_s: int = 600,
    max_tickets_per_customer: int = 0,
    organizer_id: object = None,
) -> None:
    """A draft event with its sections (what the API's create calls come down to)."""
    async with db.begin() as conn:
        await conn.execute(
            insert(Event).values(
                id=event_id,
                organizer_id=organizer_id,
                name=name,
                venue=venue,
                starts_at=starts_at,
                currency=currency,
                status="draft",
                hold_ttl_s=hold_ttl_s,
                max_tickets_per_customer=max_tickets_per_customer,
            )
        )
        for spec in sections:
            capacity = (
                (spec.rows or 0) * (spec.seats_per_row or 0)
                if spec.kind == "seated"
                else spec.capacity
            )
            await conn.execute(
                insert(Section).values(
                    event_id=event_id,
                    code=spec.code,
                    name=spec.name,
                    kind=spec.kind,
                    price_cents=spec.price_cents,
                    rows=spec.rows,
                    seats_per_row=spec.seats_per_row,
                    capacity=capacity,
                )
            )


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
        if r.kind == "seated"
        else GeneralSection(r.code, r.capacity)
        for r in rows
    ]


async def publish_event(db: AsyncEngine, engine: InventoryLoader, event_id: str) -> None:
    """Puts a draft (or already published) event on sale: Postgres, then Redis."""
    async with db.begin() as conn:
        event = (
            await conn.execute(
                select(Event.status, Event.max_tickets_per_customer)
                .where(Event.id == event_id)
                .with_for_update()
            )
        ).one_or_none()
        if event is None:
            raise PublishError("not_found", f"no event {event_id}")
        if event.status not in ("draft", "on_sale"):
            raise PublishError("invalid_state", f"event is {event.status}")
        sections = await inventory_of(conn, event_id)
        if not sections:
            raise PublishError("no_sections", "an event needs a section before it goes on sale")
        await _write_seats(conn, event_id)
        await conn.execute(
            update(Event)
            .where(Event.id == event_id)
            .values(
                status="on_sale", published_at=func.coalesce(Event.published_at, datetime.now(UTC))
            )
        )
    await engine.load_inventory(
        event_id, sections, status="on_sale", max_per_customer=event.max_tickets_per_customer
    )


async def _write_seats(conn: AsyncConnection, event_id: str) -> None:
    seated = (
        await conn.execute(
            select(Section.id, Section.code, Section.rows, Section.seats_per_row).where(
                Section.event_id == event_id, Section.kind == "seated"
            )
        )
    ).all()
    for section in seated:
        values = [
            {
                "event_id": event_id,
                "id": f"{section.code}-{row}-{number}",
                "section_id": section.id,
                "row": row,
                "number": number,
            }
            for row in range(1, section.rows + 1)
            for number in range(1, section.seats_per_row + 1)
        ]
        for start in range(0, len(values), 5000):
            await conn.execute(insert(Seat).on_conflict_do_nothing(), values[start : start + 5000])
