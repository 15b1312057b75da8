"""The write-behind: every confirmed sale reaches Postgres exactly once."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import asyncpg
import pytest
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine

from engine.client import EngineClient
from engine.scripts import EventKeys
from persistence import migrate
from persistence.db import create_engine
from persistence.embedded import EmbeddedPostgres, free_port
from persistence.writer import DEAD_LETTERS, OutboxWriter
from tests.sales import counts, published_event, sell, wait_for


async def test_writer_records_each_sale_once_even_when_redelivered(
    db: AsyncEngine, client: EngineClient, redis: Redis, database_url: str
) -> None:
    event_id = await published_event(db, client)
    tickets = await sell(client, event_id, 200)
    stream = EventKeys(event_id).outbox
    copies = await redis.xrange(stream, count=10)  # to redeliver after they were written
    writer = OutboxWriter(redis, db, batch_size=64)
    await writer.drain()
    assert await counts(database_url, event_id) == (200, 200, tickets)
    assert (await writer.lag()).pending == 0
    for _, fields in copies:  # the same confirmations arrive again
        await redis.xadd(stream, fields)
    await writer.drain()
    assert await counts(database_url, event_id) == (200, 200, tickets)


def _writer_process(redis_url: str, database_url: str) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "ONSALE_REDIS_URL": redis_url,
        "ONSALE_DATABASE_URL": database_url,
        "ONSALE_WRITER_BATCH_SIZE": "100",
        "ONSALE_WRITER_RECLAIM_IDLE_MS": "500",
    }
    return subprocess.Popen(
        [str(Path(sys.executable).with_name("onsale")), "writer"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


@pytest.mark.recovery
async def test_writer_killed_mid_stream_loses_and_doubles_nothing(
    db: AsyncEngine, client: EngineClient, redis_url: str, database_url: str
) -> None:
    event_id = await published_event(db, client)
    first = _writer_process(redis_url, database_url)
    try:
        selling = asyncio.ensure_future(sell(client, event_id, 5000))

        async def some_written() -> bool:
            return (await counts(database_url, event_id))[0] >= 500

        await wait_for(some_written, 60, "the first writer to start writing")
        first.send_signal(signal.SIGKILL)
        first.wait()
        tickets = await selling
    finally:
        if first.poll() is None:
            first.kill()
    written_before = (await counts(database_url, event_id))[0]
    print(f"written when the writer was killed: {written_before}")
    assert 500 <= written_before < 5000  # killed mid-stream: the rest waits in the outbox
    second = _writer_process(redis_url, database_url)
    try:

        async def all_written() -> bool:
            return (await counts(database_url, event_id))[0] == 5000

        await wait_for(all_written, 90, "the second writer to catch up")
    finally:
        second.send_signal(signal.SIGTERM)
        assert second.wait(timeout=30) == 0
    assert await counts(database_url, event_id) == (5000, 5000, tickets)


@pytest.mark.recovery
async def test_sales_go_on_while_postgres_is_down_and_land_when_it_returns(
    tmp_path: Path, client: EngineClient, redis: Redis
) -> None:
    postgres = EmbeddedPostgres(tmp_path / "pg", port=free_port())
    url = postgres.start()
    migrate.upgrade(url)
    db = create_engine(url)
    stop = asyncio.Event()
    writer = OutboxWriter(redis, db, batch_size=200, max_backoff_s=0.5)
    try:
        event_id = await published_event(db, client)
        running = asyncio.ensure_future(writer.run(stop))
        postgres.stop()
        tickets = await sell(client, event_id, 2000)  # raises if any hold/confirm failed
        assert (await writer.lag()).pending > 0  # buffered in the stream meanwhile
        postgres.start()
        url_again = postgres.url

        async def caught_up() -> bool:
            return (await counts(url_again, event_id))[0] == 2000

        await wait_for(caught_up, 90, "the writer to catch up after Postgres returned")
        assert await counts(url_again, event_id) == (2000, 2000, tickets)
        assert (await writer.lag()).pending == 0
        stop.set()
        await running
    finally:
        stop.set()
        await db.dispose()
        postgres.stop()


async def test_sale_beyond_capacity_is_refused_and_does_not_block_the_others(
    db: AsyncEngine, client: EngineClient, redis: Redis, database_url: str
) -> None:
    event_id = await published_event(db, client)
    stream = EventKeys(event_id).outbox
    await redis.xadd(
        stream,
        {  # what an oversold Redis would hand the writer
            "type": "order_confirmed",
            "event_id": event_id,
            "order_id": f"{event_id}-bad",
            "hold_id": "h-bad",
            "customer_id": "c",
            "seats": "",
            "section": "GA",
            "quantity": "20001",
            "confirmed_at_ms": "1790000000000",
            "meta": "{}",
        },
    )
    tickets = await sell(client, event_id, 12)
    await OutboxWriter(redis, db).drain()
    assert await counts(database_url, event_id) == (12, 12, tickets)
    dead = await redis.xrange(DEAD_LETTERS)
    assert any(fields[b"order_id"] == f"{event_id}-bad".encode() for _, fields in dead)
    conn = await asyncpg.connect(database_url)
    try:
        sold = await conn.fetchval(
            "SELECT sold FROM sections WHERE event_id = $1 AND code = 'GA'", event_id
        )
    finally:
        await conn.close()
    assert sold == tickets - 3  # 3 of the 12 orders are single seats in section A
