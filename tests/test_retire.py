"""A finished event's inventory leaves Redis, and comes back from Postgres whole.

Refund markers and per-customer counters stay in Redis while an event lives
(the limit and the refund replay need them); persistence.retire takes the
whole inventory out once the event is closed, written and without holds.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine

from engine.client import EngineClient
from engine.outbox import OUTBOX_REGISTRY
from engine.scripts import EventKeys, InventoryScripts
from persistence import events as event_store
from persistence.rebuild import PostgresRestore
from persistence.retire import retire_finished
from persistence.writer import OutboxWriter
from sales.vocabulary import EventStatus
from tests.sales import counts, published_event, sell, wait_for


@pytest.fixture
async def restoring_client(
    redis_url: str, database_url: str, ray_local: str
) -> AsyncIterator[EngineClient]:
    client = EngineClient(redis_url, restore=PostgresRestore(database_url))
    yield client
    await client.aclose()


async def _sold_counters(redis: Redis, event_id: str) -> dict[str, str]:
    raw: dict[bytes, bytes] = await redis.hgetall(EventKeys(event_id).customers)
    return {k.decode(): v.decode() for k, v in raw.items() if k.endswith(b":sold") and v != b"0"}


async def _order_status(database_url: str, order_id: str) -> Any:
    conn = await asyncpg.connect(database_url)
    try:
        return await conn.fetchval("SELECT status FROM orders WHERE id = $1", order_id)
    finally:
        await conn.close()


async def test_a_finished_event_leaves_redis_and_comes_back_from_postgres_whole(
    db: AsyncEngine, restoring_client: EngineClient, redis: Redis, database_url: str
) -> None:
    client, scripts = restoring_client, InventoryScripts(redis)
    keys = EventKeys(await published_event(db, client))
    event_id = keys.event_id
    later = datetime.now(UTC) + timedelta(hours=1)  # the event has started by then

    async def retire() -> bool:  # other tests' finished events may go too
        return event_id in await retire_finished(redis, db, after_s=0, now=later, scripts=scripts)

    stop = asyncio.Event()
    writer = asyncio.create_task(OutboxWriter(redis, db, block_ms=100).run(stop))
    try:
        await sell(client, event_id, 12)  # 3 seated orders, 9 GA
        refunded = await client.hold_quantity(event_id, "r", "GA", 2, ttl_s=600)
        await client.confirm(event_id, refunded.hold_id, f"{event_id}-r", {"amount_cents": 1})
        await client.refund(event_id, f"{event_id}-r", refunded.hold_id, section="GA", quantity=2)
        live = await client.hold_seats(event_id, "late", ["A-30-50"], ttl_s=600)

        async def written() -> bool:
            return await redis.xlen(keys.outbox) == 0

        await wait_for(written, 20, "the writer to record the sales")
        assert not await retire()  # still on sale
        assert await redis.hexists(keys.holds, f"refund:{event_id}-r")
        before_counters = await _sold_counters(redis, event_id)
        assert len(before_counters) >= 12

        await event_store.end_event(db, event_id, EventStatus.CLOSED)
        await client.set_status(event_id, EventStatus.CLOSED)
        assert event_id not in await retire_finished(redis, db, after_s=3600, scripts=scripts)
        assert not await retire()  # a hold is live: it may still be bought
        assert await scripts.retire(event_id) == "holds"
        await client.release(event_id, live.hold_id, "late")
        before = await client.snapshot(event_id)

        assert await retire()
        assert await redis.exists(*keys.mutation_keys()) == 0
        assert not await redis.sismember(OUTBOX_REGISTRY, keys.outbox)
        assert await client.version(event_id) is None

        # A reader (or a late payment, or a refund) brings it back from Postgres.
        assert await client.restore(event_id)
        after = await client.snapshot(event_id)
        assert after.status is EventStatus.CLOSED
        assert {s: v for s, v in after.seats.items() if v == "sold"} == before.seats
        assert after.section("GA").sold == before.section("GA").sold
        assert await _sold_counters(redis, event_id) == before_counters  # the limit's counts
        assert after.version > before.version  # viewers see a jump and resync

        # The organizer refunds a sale after the rebuild: the running writer,
        # whose stream was deleted under it, records it.
        await client.refund(event_id, f"{event_id}-o0", "", seats=["A-1-1"])

        async def refund_written() -> bool:
            return await _order_status(database_url, f"{event_id}-o0") == "refunded"

        await wait_for(refund_written, 20, "the refund after the rebuild to be written")
        assert (await client.snapshot(event_id)).seats.get("A-1-1") is None
        assert (await counts(database_url, event_id))[0] == 11  # 12 sold, the r and o0 refunded
    finally:
        stop.set()
        await writer


async def test_an_unwritten_outbox_keeps_the_inventory(
    db: AsyncEngine, restoring_client: EngineClient, redis: Redis
) -> None:
    """Negative control for the writer's part: a sale not yet in Postgres
    must keep its event in Redis, or the rebuild would not know it."""
    client, scripts = restoring_client, InventoryScripts(redis)
    event_id = await published_event(db, client)
    await sell(client, event_id, 2)  # no writer runs: the sales wait in the outbox
    await event_store.end_event(db, event_id, EventStatus.CLOSED)
    await client.set_status(event_id, EventStatus.CLOSED)
    later = datetime.now(UTC) + timedelta(hours=1)
    # (Other tests' finished events may retire here too: only this one counts.)
    assert event_id not in await retire_finished(redis, db, after_s=0, now=later, scripts=scripts)
    assert await scripts.retire(event_id) == "outbox"
    assert await redis.sismember(OUTBOX_REGISTRY, EventKeys(event_id).outbox)
    await OutboxWriter(redis, db).drain()
    assert event_id in await retire_finished(redis, db, after_s=0, now=later, scripts=scripts)
