"""Refunds through the write-behind: recorded once, tickets revoked, sold
counts down exactly once, the seat sellable again; and rebuilds honour
refunds whether or not Postgres has seen them yet."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import asyncpg
import pytest
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine

from engine.client import EngineClient
from engine.scripts import EventKeys
from persistence.orders import create_order
from persistence.writer import OutboxWriter, decode_entry, write_entries
from sales.items import OrderItem
from tests.sales import published_event, sell
from tests.test_rebuild import lose_inventory_but_not_outbox, restoring_client

pytestmark = pytest.mark.recovery

__all__ = ["restoring_client"]  # the fixture, shared with the rebuild tests


async def _order(url: str, order_id: str) -> tuple[str, list[str], bool]:
    conn = await asyncpg.connect(url)
    try:
        status = await conn.fetchval("SELECT status FROM orders WHERE id = $1", order_id)
        tickets = await conn.fetch("SELECT status FROM tickets WHERE order_id = $1", order_id)
        refunded_at = await conn.fetchval(
            "SELECT refunded_at IS NOT NULL FROM orders WHERE id = $1", order_id
        )
        return status, sorted(t["status"] for t in tickets), refunded_at
    finally:
        await conn.close()


async def _sold(url: str, event_id: str) -> dict[str, int]:
    conn = await asyncpg.connect(url)
    try:
        rows = await conn.fetch("SELECT code, sold FROM sections WHERE event_id = $1", event_id)
        return {r["code"]: r["sold"] for r in rows}
    finally:
        await conn.close()


async def test_refund_is_written_once_revokes_tickets_and_the_seat_sells_again(
    db: AsyncEngine, client: EngineClient, redis: Redis, database_url: str
) -> None:
    event_id = await published_event(db, client)
    await sell(client, event_id, 4)  # o0 is seat A-1-1, o1..o3 GA: 2 + 3 + 1 places
    writer = OutboxWriter(redis, db)
    assert await writer.drain() == 4
    seated, general = f"{event_id}-o0", f"{event_id}-o2"
    assert await _order(database_url, seated) == ("paid", ["valid"], False)
    assert await _sold(database_url, event_id) == {"A": 1, "GA": 6}

    await client.refund(event_id, seated, "", seats=["A-1-1"], quantity=1)
    await client.refund(event_id, general, "", section="GA", quantity=3)
    stream = EventKeys(event_id).outbox
    entries = await redis.xrange(stream)  # the refunds, before they are written
    assert [f[b"type"] for _, f in entries] == [b"order_refunded"] * 2
    assert await writer.drain() == 4  # refunds are not orders recorded
    assert await _order(database_url, seated) == ("refunded", ["refunded"], True)
    assert await _order(database_url, general) == ("refunded", ["refunded"] * 3, True)
    assert await _sold(database_url, event_id) == {"A": 0, "GA": 3}

    for _, fields in entries:  # redelivered
        await redis.xadd(stream, fields)
    await writer.drain()
    assert await _order(database_url, seated) == ("refunded", ["refunded"], True)
    assert await _sold(database_url, event_id) == {"A": 0, "GA": 3}  # not twice

    hold = await client.hold_seats(event_id, "next", ["A-1-1"], ttl_s=600)
    await client.confirm(event_id, hold.hold_id, f"{event_id}-again", {})
    await writer.drain()  # a new valid ticket for the seat: the unique index allows it
    assert (await _order(database_url, f"{event_id}-again"))[:2] == ("paid", ["valid"])
    assert await _sold(database_url, event_id) == {"A": 1, "GA": 3}


async def test_a_sale_and_its_refund_in_one_batch(
    db: AsyncEngine, client: EngineClient, redis: Redis, database_url: str
) -> None:
    event_id = await published_event(db, client)
    hold = await client.hold_seats(event_id, "c", ["A-2-2", "A-2-3"], ttl_s=600)
    order_id = f"{event_id}-quick"
    await client.confirm(event_id, hold.hold_id, order_id, {})
    await client.refund(event_id, order_id, hold.hold_id)  # the hold's record says what
    writer = OutboxWriter(redis, db)
    assert await writer.drain() == 1
    assert await _order(database_url, order_id) == ("refunded", ["refunded"] * 2, True)
    assert (await _sold(database_url, event_id))["A"] == 0


async def test_a_refund_written_before_its_sale_leaves_the_order_refunded(
    db: AsyncEngine, client: EngineClient, redis: Redis, database_url: str
) -> None:
    """Two consumers may commit out of stream order; the end state is the same."""
    event_id = await published_event(db, client)
    hold = await client.hold_quantity(event_id, "c", "GA", 2, ttl_s=600)
    order_id = f"{event_id}-racy"
    await create_order(
        db,
        order_id=order_id,
        event_id=event_id,
        customer_id="c",
        hold_id=hold.hold_id,
        amount_cents=6000,
        currency="EUR",
        items=[OrderItem("GA", 2, 1000)],
        expires_at=datetime.now(UTC) + timedelta(minutes=10),
    )
    await client.confirm(event_id, hold.hold_id, order_id, {})
    await client.refund(event_id, order_id, hold.hold_id)
    stream = EventKeys(event_id).outbox
    confirmed, refunded = [decode_entry(stream, i, f) for i, f in await redis.xrange(stream)]
    async with db.begin() as conn:
        assert await write_entries(conn, [refunded]) == 0
    async with db.begin() as conn:
        assert await write_entries(conn, [confirmed]) == 0  # no longer pending: not sold
    assert await _order(database_url, order_id) == ("refunded", [], True)
    assert (await _sold(database_url, event_id))["GA"] == 0
    await redis.delete(stream)


async def test_rebuild_honours_a_refund_the_writer_has_not_written(
    db: AsyncEngine, restoring_client: EngineClient, redis: Redis
) -> None:
    client = restoring_client
    event_id = await published_event(db, client)
    await sell(client, event_id, 4)  # GA: o1 2, o2 3, o3 1
    await OutboxWriter(redis, db).drain()  # the sales are in Postgres
    await client.refund(event_id, f"{event_id}-o0", "", seats=["A-1-1"], quantity=1)
    await client.refund(event_id, f"{event_id}-o2", "", section="GA", quantity=3)
    await lose_inventory_but_not_outbox(redis, event_id)  # the refunds are only in the outbox
    rebuilt = await client.hold_seats(event_id, "after", ["A-1-1"], ttl_s=600)
    assert rebuilt.seats == ("A-1-1",)  # free again after the rebuild
    assert (await client.snapshot(event_id)).section("GA").sold == 3
    again = await client.refund(event_id, f"{event_id}-o2", "", section="GA", quantity=3)
    assert again.replayed  # the rebuild kept the refund's marker: not taken twice
    assert (await client.snapshot(event_id)).section("GA").sold == 3


async def test_rebuild_after_flush_with_refunds_written_and_one_still_in_the_stream(
    db: AsyncEngine, restoring_client: EngineClient, redis: Redis
) -> None:
    client = restoring_client
    event_id = await published_event(db, client)
    await sell(client, event_id, 4)
    await client.refund(event_id, f"{event_id}-o0", "", seats=["A-1-1"], quantity=1)
    await client.refund(event_id, f"{event_id}-o1", "", section="GA", quantity=2)
    stream = EventKeys(event_id).outbox
    stale = [f for _, f in await redis.xrange(stream)]
    await OutboxWriter(redis, db).drain()  # sales and refunds are in Postgres
    await redis.flushdb()  # Redis loses everything
    for fields in stale:  # as if a writer had committed but not yet acknowledged
        await redis.xadd(stream, fields)
    held = await client.hold_seats(event_id, "after", ["A-1-1"], ttl_s=600)  # rebuilds
    assert held.seats == ("A-1-1",)
    snapshot = await client.snapshot(event_id)
    assert snapshot.section("GA").sold == 4  # 3 + 1 left; the refund not taken twice
    assert {s for s, v in snapshot.seats.items() if v == "sold"} == set()
    await OutboxWriter(redis, db).drain()


async def test_rebuild_after_flush_with_the_refund_written(
    db: AsyncEngine, restoring_client: EngineClient, redis: Redis, database_url: str
) -> None:
    client = restoring_client
    event_id = await published_event(db, client)
    await sell(client, event_id, 8)  # seats A-1-1 (o0) and A-1-2 (o4)
    await client.refund(event_id, f"{event_id}-o0", "", seats=["A-1-1"], quantity=1)
    await OutboxWriter(redis, db).drain()
    before = await client.snapshot(event_id)
    await redis.flushdb()
    await client.hold_seats(event_id, "after", ["A-3-3"], ttl_s=600)  # rebuilds
    after = await client.snapshot(event_id)
    assert {s for s, v in after.seats.items() if v == "sold"} == {"A-1-2"}
    assert after.section("GA").sold == before.section("GA").sold
    assert (await client.hold_seats(event_id, "again", ["A-1-1"], ttl_s=600)).seats
    assert (await _sold(database_url, event_id))["A"] == 1
