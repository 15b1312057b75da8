"""Redis loses an event's keys after sales: the actor rebuilds it from Postgres."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine

from engine.client import EngineClient
from engine.errors import SeatsUnavailable
from engine.scripts import EventKeys
from persistence.rebuild import PostgresRestore
from persistence.writer import OutboxWriter
from sales import catalog
from tests.sales import counts, published_event, sell

pytestmark = pytest.mark.recovery


@pytest.fixture
async def restoring_client(
    redis_url: str, database_url: str, ray_local: str
) -> AsyncIterator[EngineClient]:
    client = EngineClient(redis_url, restore=PostgresRestore(database_url))
    yield client
    await client.aclose()


async def lose_inventory_but_not_outbox(redis: Redis, event_id: str) -> None:
    keys = EventKeys(event_id)
    await redis.unlink(*[k for k in keys.mutation_keys() if k != keys.outbox])


async def test_lost_inventory_is_rebuilt_with_sold_seats_sold_and_free_seats_free(
    db: AsyncEngine,
    restoring_client: EngineClient,
    redis: Redis,
    database_url: str,
) -> None:
    client = restoring_client
    event_id = await published_event(db, client)
    await sell(client, event_id, 40)  # 10 seats (A-1-1 … A-1-10) and 30 GA orders
    await OutboxWriter(redis, db).drain()
    before = await client.snapshot(event_id)
    held = await client.hold_seats(event_id, "x", ["A-5-5"], ttl_s=600)  # holds are not kept

    restores = (await client.actor_stats(event_id))["restores"]
    await redis.flushdb()  # Redis loses everything; Postgres has every written sale
    again = await client.hold_seats(event_id, "late", ["A-9-9"], ttl_s=600)  # triggers rebuild
    assert again.quantity == 1

    after = await client.snapshot(event_id)
    assert {s: v for s, v in after.seats.items() if v == "sold"} == before.seats
    assert after.section("GA").sold == before.section("GA").sold
    assert after.version > before.version  # viewers see a jump and resync
    with pytest.raises(SeatsUnavailable):
        await client.hold_seats(event_id, "thief", ["A-1-1"], ttl_s=600)  # sold stays sold
    assert (await client.hold_seats(event_id, "y", [held.seats[0]], ttl_s=600)).quantity == 1
    assert (await client.actor_stats(event_id))["restores"] == restores + 1


async def test_rebuild_counts_confirmations_the_writer_has_not_written_yet(
    db: AsyncEngine,
    restoring_client: EngineClient,
    redis: Redis,
    database_url: str,
) -> None:
    client = restoring_client
    event_id = await published_event(db, client)
    await sell(client, event_id, 20)  # still only in the outbox
    before = await client.snapshot(event_id)
    await lose_inventory_but_not_outbox(redis, event_id)
    await client.hold_quantity(event_id, "late", "GA", 1, ttl_s=600)
    after = await client.snapshot(event_id)
    assert after.section("GA").sold == before.section("GA").sold
    assert {s for s, v in after.seats.items() if v == "sold"} == set(before.seats)
    await OutboxWriter(redis, db).drain()
    assert (await counts(database_url, event_id))[:2] == (20, 20)  # and written once


async def test_publishing_again_after_redis_lost_the_event_keeps_its_sales_sold(
    db: AsyncEngine, restoring_client: EngineClient, redis: Redis
) -> None:
    """`make up` publishes the demo event again at every start, and its actor
    may still be alive: a publish that finds the inventory gone must load what
    Postgres has sold, never an empty map that would sell those seats again."""
    client = restoring_client
    event_id = await published_event(db, client)
    await sell(client, event_id, 8)  # 2 seats and 6 GA orders
    await OutboxWriter(redis, db).drain()
    before = await client.snapshot(event_id)
    await lose_inventory_but_not_outbox(redis, event_id)  # the actor lives on
    await catalog.put_on_sale(db, client, event_id)
    after = await client.snapshot(event_id)
    assert {s: v for s, v in after.seats.items() if v == "sold"} == before.seats
    assert after.section("GA").sold == before.section("GA").sold
    with pytest.raises(SeatsUnavailable):
        await client.hold_seats(event_id, "thief", [next(iter(before.seats))], ttl_s=600)
