"""The write-behind: confirmed sales from the outbox streams into Postgres.

A Redis Streams consumer group over every event's outbox. Each batch is
written in one transaction, idempotently by order id, and acknowledged (then
deleted from the stream) only after Postgres committed it: a crash at any
point redelivers, never loses, and a redelivery writes nothing twice. While
Postgres is unreachable the writer backs off and the stream buffers; the
engine never waits for it. Several writers may run at once.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import time
import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import ResponseError
from sqlalchemy import update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from engine.scripts import OUTBOX_REGISTRY
from persistence.models import Order, Section, Ticket

log = logging.getLogger(__name__)

GROUP = "writers"
DEAD_LETTERS = "onsale:outbox:dead"  # entries Postgres refuses on integrity grounds


class CapacityExceeded(Exception):
    """Postgres would record more GA tickets than the section holds."""


@dataclass(frozen=True)
class Entry:
    stream: str
    id: str
    fields: dict[str, str]

    @property
    def order_id(self) -> str:
        return self.fields["order_id"]


@dataclass(frozen=True)
class Lag:
    pending: int  # entries not yet written to Postgres (delivered or not)
    oldest_age_s: float  # age of the oldest of them, 0 when none


def _decode(stream: bytes | str, entry_id: bytes | str, raw: dict[Any, Any]) -> Entry:
    def text(v: bytes | str) -> str:
        return v.decode() if isinstance(v, bytes) else v

    return Entry(text(stream), text(entry_id), {text(k): text(v) for k, v in raw.items()})


async def write_entries(
    conn: AsyncConnection, entries: Sequence[Entry], *, copy: bool = True
) -> int:
    """Writes confirmations in the caller's transaction; returns orders newly recorded.

    An order already paid is left alone (ON CONFLICT … WHERE pending_payment),
    so its tickets are inserted only by the write that recorded it.
    """
    by_order = {e.order_id: e for e in entries if e.fields.get("type") == "order_confirmed"}
    if not by_order:
        return 0
    rows = []
    for e in by_order.values():
        meta = json.loads(e.fields.get("meta") or "{}")
        rows.append(
            {
                "id": e.order_id,
                "event_id": e.fields["event_id"],
                "customer_id": e.fields["customer_id"],
                "hold_id": e.fields["hold_id"],
                "status": "paid",
                "amount_cents": meta.get("amount_cents"),
                "currency": meta.get("currency"),
                "confirmed_at": datetime.fromtimestamp(
                    int(e.fields["confirmed_at_ms"]) / 1000, UTC
                ),
                "outbox_id": e.id,
            }
        )
    upsert = insert(Order)  # executemany: compiled once, sent in batches by insertmanyvalues
    stmt = upsert.on_conflict_do_update(
        index_elements=[Order.id],
        set_={
            "status": "paid",
            "confirmed_at": upsert.excluded.confirmed_at,
            "outbox_id": upsert.excluded.outbox_id,
        },
        where=Order.status == "pending_payment",
    ).returning(Order.id)
    recorded = set((await conn.execute(stmt, rows)).scalars())
    tickets: list[dict[str, Any]] = []
    per_section: Counter[tuple[str, str]] = Counter()
    for order_id in recorded:
        f = by_order[order_id].fields
        seats = f["seats"].split(",") if f["seats"] else []
        for seat in seats:
            tickets.append(
                {
                    "id": uuid.uuid4(),
                    "order_id": order_id,
                    "event_id": f["event_id"],
                    "section_code": seat.rsplit("-", 2)[0],
                    "seat_id": seat,
                }
            )
            per_section[(f["event_id"], seat.rsplit("-", 2)[0])] += 1
        if not seats:
            per_section[(f["event_id"], f["section"])] += int(f["quantity"])
            tickets.extend(
                {
                    "id": uuid.uuid4(),
                    "order_id": order_id,
                    "event_id": f["event_id"],
                    "section_code": f["section"],
                    "seat_id": None,
                }
                for _ in range(int(f["quantity"]))
            )
    if tickets and copy:
        await _copy_tickets(conn, tickets)
    elif tickets:  # plain INSERTs: the benchmark's one-order-at-a-time reference
        await conn.execute(insert(Ticket), tickets)
    # Sorted, so concurrent writers lock section rows in one order (no deadlock).
    for (event_id, code), n in sorted(per_section.items()):
        await _count_sold(conn, event_id, code, n)
    return len(recorded)


TICKET_COLUMNS = ("id", "order_id", "event_id", "section_code", "seat_id", "status")


async def _copy_tickets(conn: AsyncConnection, tickets: list[dict[str, Any]]) -> None:
    """COPY, in the batch's transaction: tickets are most of what the writer writes."""
    raw = await conn.get_raw_connection()
    records = [
        (t["id"], t["order_id"], t["event_id"], t["section_code"], t["seat_id"], "valid")
        for t in tickets
    ]
    await raw.driver_connection.copy_records_to_table(  # type: ignore[union-attr]
        "tickets", records=records, columns=TICKET_COLUMNS
    )


async def _count_sold(conn: AsyncConnection, event_id: str, code: str, n: int) -> None:
    row = (
        await conn.execute(
            update(Section)
            .where(Section.event_id == event_id, Section.code == code)
            .values(sold=Section.sold + n)
            .returning(Section.sold, Section.capacity)
        )
    ).one()
    if row.sold > row.capacity:  # the CHECK constraint would refuse it too
        raise CapacityExceeded(f"{event_id}/{code}: {row.sold} tickets for {row.capacity}")


class OutboxWriter:
    """One consumer of the ``writers`` group; run several for more throughput."""

    def __init__(
        self,
        redis: Redis,
        db: AsyncEngine,
        *,
        batch_size: int = 500,
        block_ms: int = 200,
        reclaim_idle_ms: int = 10_000,
        max_backoff_s: float = 5.0,
        consumer: str | None = None,
    ) -> None:
        self.redis = redis
        self.db = db
        self.batch_size = batch_size
        self.block_ms = block_ms
        self.reclaim_idle_ms = reclaim_idle_ms
        self.max_backoff_s = max_backoff_s
        self.consumer = consumer or f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self._streams: list[str] = []
        self.written = 0

    async def run(self, stop: asyncio.Event | None = None) -> None:
        """Writes until ``stop`` is set; on start, takes over what dead writers left."""
        stop = stop or asyncio.Event()
        await self._refresh_streams()
        await self.reclaim(min_idle_ms=self.reclaim_idle_ms)
        last_refresh = last_reclaim = time.monotonic()
        while not stop.is_set():
            now = time.monotonic()
            if now - last_refresh > 1.0:
                await self._refresh_streams()
                last_refresh = now
            if now - last_reclaim > self.reclaim_idle_ms / 1000:
                await self.reclaim(min_idle_ms=self.reclaim_idle_ms)
                last_reclaim = now
            entries = await self._read_new()
            if entries:
                await self._persist(entries)

    async def drain(self) -> int:
        """Writes everything pending now, then returns (tests, tools)."""
        await self._refresh_streams()
        await self.reclaim(min_idle_ms=0)
        while entries := await self._read_new(block=False):
            await self._persist(entries)
        return self.written

    async def reclaim(self, *, min_idle_ms: int) -> None:
        """Claims and writes entries delivered to a consumer that never acknowledged them."""
        for stream in self._streams:
            start = "0-0"
            while True:
                start, claimed, *_ = await self.redis.xautoclaim(
                    stream,
                    GROUP,
                    self.consumer,
                    min_idle_time=min_idle_ms,
                    start_id=start,
                    count=self.batch_size,
                )
                entries = [_decode(stream, i, f) for i, f in claimed if f]
                if entries:
                    await self._persist(entries)
                if start in (b"0-0", "0-0"):
                    break

    async def lag(self) -> Lag:
        pending, oldest_ms = 0, None
        for stream in self._streams or await self._refresh_streams():
            first: Any = await self.redis.xrange(
                stream, count=1
            )  # acknowledged entries are deleted
            pending += await self.redis.xlen(stream)
            if first:
                entry_ms = int(first[0][0].split(b"-")[0])
                oldest_ms = entry_ms if oldest_ms is None else min(oldest_ms, entry_ms)
        age = 0.0 if oldest_ms is None else max(0.0, time.time() - oldest_ms / 1000)
        return Lag(pending=pending, oldest_age_s=age)

    async def _refresh_streams(self) -> list[str]:
        members: Any = await self.redis.smembers(OUTBOX_REGISTRY)
        streams = sorted(s.decode() for s in members)
        for stream in set(streams) - set(self._streams):
            try:
                await self.redis.xgroup_create(stream, GROUP, id="0", mkstream=True)
            except ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise
        self._streams = streams
        return streams

    async def _read_new(self, block: bool = True) -> list[Entry]:
        if not self._streams:
            if block:
                await asyncio.sleep(self.block_ms / 1000)
            return []
        reply: Any = await self.redis.xreadgroup(
            GROUP,
            self.consumer,
            dict.fromkeys(self._streams, ">"),
            count=self.batch_size,
            block=self.block_ms if block else None,
        )
        return [_decode(stream, i, f) for stream, items in reply or [] for i, f in items]

    async def _persist(self, entries: list[Entry]) -> None:
        """Commits, then acknowledges; retries with backoff while Postgres is away."""
        delay = 0.05
        while True:
            try:
                async with self.db.begin() as conn:
                    self.written += await write_entries(conn, entries)
                break
            except (IntegrityError, CapacityExceeded):
                await self._persist_one_by_one(entries)
                return
            except (DBAPIError, OSError) as exc:
                log.warning(
                    "postgres unavailable (%s); retrying in %.2fs", type(exc).__name__, delay
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.max_backoff_s)
        await self._acknowledge(entries)

    async def _persist_one_by_one(self, entries: list[Entry]) -> None:
        """Isolates entries Postgres refuses, so one bad sale cannot block the rest."""
        for entry in entries:
            try:
                async with self.db.begin() as conn:
                    self.written += await write_entries(conn, [entry])
            except (IntegrityError, CapacityExceeded) as exc:
                log.error("outbox entry %s refused by postgres: %s", entry.id, exc)
                dead: dict[Any, Any] = {
                    **entry.fields,
                    "stream": entry.stream,
                    "entry_id": entry.id,
                    "error": str(exc)[:500],
                }
                await self.redis.xadd(DEAD_LETTERS, dead)
            await self._acknowledge([entry])

    async def _acknowledge(self, entries: list[Entry]) -> None:
        by_stream: dict[str, list[str]] = {}
        for e in entries:
            by_stream.setdefault(e.stream, []).append(e.id)
        async with self.redis.pipeline(transaction=False) as pipe:
            for stream, ids in by_stream.items():
                pipe.xack(stream, GROUP, *ids)
                pipe.xdel(stream, *ids)
            await pipe.execute()


async def run_writer(
    redis_url: str, database_url: str, stop: asyncio.Event | None = None, **options: Any
) -> None:
    """`onsale writer`: runs one writer until stopped."""
    from persistence.db import create_engine

    redis = Redis.from_url(redis_url)
    db = create_engine(database_url, pool_size=2)
    try:
        await OutboxWriter(redis, db, **options).run(stop)
    finally:
        await redis.aclose()
        await db.dispose()
