"""Refunds through the write-behind: recorded once, tickets revoked, the seat
sellable again; and a refund Postgres has not seen yet survives a rebuild."""

from __future__ import annotations

import asyncpg
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine

from engine.client import EngineClient
from engine.scripts import EventKeys
from persistence.writer import OutboxWriter
from tests.sales import published_event, sell
from tests.test_rebuild import lose_inventory_but_not_outbox, restoring_client

__all__ = ["restoring_client"]  # the fixture, shared with the rebuild tests


async def _order(url: str, order_id: str) -> tuple[str, list[str], int]:
    conn = await asyncpg.connect(url)
    try:
        status = await conn.fetchval("SELECT status FROM orders WHERE id = $1", order_id)
        tickets = await conn.fetch("SELECT status FROM tickets WHERE order_id = $1", order_id)
        event_id = await conn.fetchval("SELECT event_id FROM orders WHERE id = $1", order_id)
        sold = await conn.fetchval(
            "SELECT sold FROM sections WHERE event_id = $1 AND code = 'A'", event_id
        )
        return status, sorted(t["status"] for t in tickets), sold
    finally:
        await conn.close()


async def test_refund_is_written_once_revokes_tickets_and_the_seat_sells_again(
    db: AsyncEngine, client: EngineClient, redis: Redis, database_url: str
) -> None:
    event_id = await published_event(db, client)
    await sell(client, event_id, 4)  # order o0 is seat A-1-1
    writer = OutboxWriter(redis, db)
    await writer.drain()
    order_id = f"{event_id}-o0"
    assert await _order(database_url, order_id) == ("paid", ["valid"], 1)

    await client.refund(event_id, order_id, "", seats=["A-1-1"], quantity=1)
    stream = EventKeys(event_id).outbox
    [(_, refund_entry)] = await redis.xrange(stream)  # the refund, before it is written
    await writer.drain()
    assert await _order(database_url, order_id) == ("refunded", ["refunded"], 0)

    await redis.xadd(stream, refund_entry)  # redelivered
    await writer.drain()
    assert await _order(database_url, order_id) == ("refunded", ["refunded"], 0)  # not twice

    hold = await client.hold_seats(event_id, "next", ["A-1-1"], ttl_s=600)
    await client.confirm(event_id, hold.hold_id, f"{event_id}-again", {})
    await writer.drain()  # a new valid ticket for the seat: the unique index allows it
    assert (await _order(database_url, f"{event_id}-again"))[:2] == ("paid", ["valid"])


async def test_rebuild_honours_a_refund_the_writer_has_not_written(
    db: AsyncEngine, restoring_client: EngineClient, redis: Redis
) -> None:
    client = restoring_client
    event_id = await published_event(db, client)
    await sell(client, event_id, 4)
    await OutboxWriter(redis, db).drain()  # the sale is in Postgres
    await client.refund(event_id, f"{event_id}-o0", "", seats=["A-1-1"], quantity=1)
    await lose_inventory_but_not_outbox(redis, event_id)  # the refund is only in the outbox
    rebuilt = await client.hold_seats(event_id, "after", ["A-1-1"], ttl_s=600)
    assert rebuilt.seats == ("A-1-1",)  # free again after the rebuild
