"""Selling through the engine into Postgres, shared by the persistence tests."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

import asyncpg
from sqlalchemy.ext.asyncio import AsyncEngine

from engine.client import EngineClient
from engine.model import HoldPlaced
from persistence.events import EventDraft, SectionSpec
from sales import catalog
from sales.vocabulary import SectionKind

SECTIONS = [
    SectionSpec("A", "Stalls", 5000, SectionKind.SEATED, rows=30, seats_per_row=50),
    SectionSpec("GA", "Floor", 3000, SectionKind.GENERAL, capacity=20_000),
]


async def published_event(
    db: AsyncEngine, client: EngineClient, event_id: str | None = None
) -> str:
    event_id = event_id or uuid.uuid4().hex[:16]
    draft = EventDraft(name="Gig", venue="Hall", starts_at=datetime.now(UTC), currency="EUR")
    await catalog.create_event(db, None, draft, SECTIONS, event_id=event_id)
    await catalog.put_on_sale(db, client, event_id)
    return event_id


async def sell(client: EngineClient, event_id: str, n: int, seats_from: int = 0) -> int:
    """n confirmed orders (every 4th one seated); returns the tickets sold."""

    async def one(i: int) -> int:
        if i % 4 == 0:
            seat = seats_from + i // 4
            hold: HoldPlaced = await client.hold_seats(
                event_id, f"c{i}", [f"A-{seat // 50 + 1}-{seat % 50 + 1}"], ttl_s=600
            )
        else:
            hold = await client.hold_quantity(event_id, f"c{i}", "GA", 1 + i % 3, ttl_s=600)
        await client.confirm(
            event_id, hold.hold_id, f"{event_id}-o{i}", {"amount_cents": 1000, "currency": "EUR"}
        )
        return hold.quantity

    return sum(await asyncio.gather(*[one(i) for i in range(n)]))


async def counts(url: str, event_id: str) -> tuple[int, int, int]:
    conn = await asyncpg.connect(url)
    try:
        row = await conn.fetchrow(
            """SELECT (SELECT count(*) FROM orders WHERE event_id = $1 AND status = 'paid'),
                      (SELECT count(DISTINCT id) FROM orders WHERE event_id = $1),
                      (SELECT count(*) FROM tickets WHERE event_id = $1)""",
            event_id,
        )
        return row[0], row[1], row[2]
    finally:
        await conn.close()


async def wait_for(predicate: Callable[[], Awaitable[bool]], deadline_s: float, what: str) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + deadline_s
    while not await predicate():
        assert loop.time() < end, f"timed out waiting for {what}"
        await asyncio.sleep(0.1)
