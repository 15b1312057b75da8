"""The write-behind: confirmed sales from the outbox streams into Postgres.

A Redis Streams consumer group over every event's outbox. Each batch is
written in one transaction, idempotently by order id, and acknowledged (then
deleted from the stream) only after Postgres committed it: a crash at any
point redelivers, never loses, and a redelivery writes nothing twice. While
Postgres is unreachable the writer backs off and the stream buffers; the
engine never waits for it. Several writers may run at once.

On a Redis Cluster every event's stream sits in its event's slot, and one
XREADGROUP may only name streams of a single slot: there the writer reads
each stream in one pipeline (a round trip per node) and polls instead of
blocking. A single Redis keeps the one blocking XREADGROUP over every stream.
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
from typing import Any

import asyncpg
from redis.exceptions import ResponseError
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, wait_exponential

from engine.outbox import (
    OUTBOX_REGISTRY,
    OrderConfirmed,
    OrderEnded,
    OrderPlaced,
    OrderRefunded,
    OutboxEntry,
    PaymentUpdated,
    parse_entry,
)
from engine.redis_client import AsyncRedis, is_cluster, redis_client
from persistence.tickets import issued
from sales.vocabulary import OrderStatus, PaymentStatus, TicketStatus

log = logging.getLogger(__name__)

GROUP = "writers"
DEAD_LETTERS = "onsale:outbox:dead"  # entries Postgres refuses on integrity grounds
# Redis Cluster: idle polls start this far apart and double up to block_ms.
CLUSTER_POLL_MIN_S = 0.01


class CapacityExceeded(Exception):
    """Postgres would record more GA tickets than the section holds."""


# The batch is written through the raw asyncpg connection (set-based statements
# and COPY), so driver errors arrive unwrapped next to SQLAlchemy's own.
REFUSED = (IntegrityError, asyncpg.IntegrityConstraintViolationError, CapacityExceeded)
UNAVAILABLE = (
    DBAPIError,
    OSError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.exceptions.OperatorInterventionError,  # shutting down, starting up
)


def _unavailable(exc: BaseException) -> bool:
    """Postgres is away (retried), as opposed to refusing the batch (isolated)."""
    return isinstance(exc, UNAVAILABLE) and not isinstance(exc, REFUSED)


@dataclass(frozen=True)
class Entry:
    stream: str
    id: str
    fields: dict[str, str]  # as read, kept whole for the dead-letter stream
    payload: OutboxEntry | None  # None: a type this writer does not know (acknowledged)


@dataclass(frozen=True)
class Lag:
    pending: int  # entries not yet written to Postgres (delivered or not)
    oldest_age_s: float  # age of the oldest of them, 0 when none


def _stream_gone(exc: ResponseError) -> bool:
    """The error Redis gives a read of a stream deleted since the group was
    made (NOGROUP), or to a read blocked on it when it went (UNBLOCKED)."""
    text = str(exc)
    return "NOGROUP" in text or "UNBLOCKED" in text or "no longer exists" in text


def decode_entry(stream: bytes | str, entry_id: bytes | str, raw: dict[Any, Any]) -> Entry:
    """An entry as XREADGROUP, XAUTOCLAIM or XRANGE return it."""
    if isinstance(entry_id, bytes):  # a client without decode_responses
        fields = {k.decode(): v.decode() for k, v in raw.items()}
        stream = stream.decode() if isinstance(stream, bytes) else stream
        return Entry(stream, entry_id.decode(), fields, parse_entry(fields))
    return Entry(str(stream), entry_id, dict(raw), parse_entry(raw))


PAID, PENDING, REFUNDED = OrderStatus.PAID, OrderStatus.PENDING_PAYMENT, OrderStatus.REFUNDED
VALID = TicketStatus.VALID

ORDERS_UPSERT = f"""
INSERT INTO orders AS o (id, event_id, customer_id, hold_id, status,
                         amount_cents, currency, confirmed_at, outbox_id)
SELECT n.id, n.event_id, n.customer_id, n.hold_id, '{PAID}',
       n.amount_cents, n.currency, to_timestamp(n.confirmed_at_ms / 1000.0), n.outbox_id
FROM unnest($1::text[], $2::text[], $3::text[], $4::text[],
            $5::int[], $6::text[], $7::bigint[], $8::text[])
     AS n(id, event_id, customer_id, hold_id, amount_cents, currency, confirmed_at_ms, outbox_id)
ON CONFLICT (id) DO UPDATE
   SET status = '{PAID}', confirmed_at = excluded.confirmed_at, outbox_id = excluded.outbox_id
 WHERE o.status = '{PENDING}'
RETURNING o.id
"""

TICKETS_INSERT = f"""
INSERT INTO tickets (id, order_id, event_id, section_code, seat_id, serial, status)
SELECT id, order_id, event_id, section_code, seat_id, serial, '{VALID}'
FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[])
     AS t(id, order_id, event_id, section_code, seat_id, serial)
"""

# Checkout's order, pending its payment. Whatever came first for the order (its
# sale, or its end) keeps its status: this only fills in what it lacks.
ORDERS_PLACE = f"""
INSERT INTO orders AS o (id, event_id, customer_id, hold_id, status, amount_cents,
                         currency, items, expires_at, created_at)
SELECT n.id, n.event_id, n.customer_id, n.hold_id, '{PENDING}', n.amount, n.currency,
       n.items::jsonb, to_timestamp(n.expires_ms / 1000.0), to_timestamp(n.created_ms / 1000.0)
FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::int[], $6::text[],
            $7::text[], $8::bigint[], $9::bigint[])
     AS n(id, event_id, customer_id, hold_id, amount, currency, items, expires_ms, created_ms)
ON CONFLICT (id) DO UPDATE
   SET amount_cents = COALESCE(o.amount_cents, excluded.amount_cents),
       currency = COALESCE(o.currency, excluded.currency),
       items = COALESCE(o.items, excluded.items),
       expires_at = COALESCE(o.expires_at, excluded.expires_at),
       created_at = LEAST(o.created_at, excluded.created_at)
"""

# Its payment, in the status its order has reached by now.
PAYMENTS_PLACE = f"""
INSERT INTO payments (id, order_id, provider, payment_intent_id, status, amount_cents, currency)
SELECT gen_random_uuid(), n.order_id, n.provider, n.intent,
       CASE o.status WHEN '{PAID}' THEN '{PaymentStatus.SUCCEEDED}'
                     WHEN '{REFUNDED}' THEN '{PaymentStatus.SUCCEEDED}'
                     WHEN '{OrderStatus.CANCELLED}' THEN '{PaymentStatus.CANCELED}'
                     ELSE '{PaymentStatus.PENDING}' END,
       n.amount, n.currency
FROM unnest($1::text[], $2::text[], $3::text[], $4::int[], $5::text[])
     AS n(order_id, provider, intent, amount, currency)
JOIN orders o ON o.id = n.order_id
ON CONFLICT (payment_intent_id) DO NOTHING
"""

# An order that will never be paid for its seats: from pending only (or made
# here, if its checkout has not been written yet).
ORDERS_END = f"""
INSERT INTO orders AS o (id, event_id, customer_id, hold_id, status, status_reason, refunded_at)
SELECT n.id, n.event_id, n.customer_id, n.hold_id, n.status, n.reason,
       CASE WHEN n.status = '{REFUNDED}' THEN to_timestamp(n.at_ms / 1000.0) END
FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[],
            $7::bigint[])
     AS n(id, event_id, customer_id, hold_id, status, reason, at_ms)
ON CONFLICT (id) DO UPDATE
   SET status = excluded.status, status_reason = excluded.status_reason,
       refunded_at = excluded.refunded_at
 WHERE o.status = '{PENDING}'
"""

PAYMENTS_SET = """
UPDATE payments AS p SET status = n.status, updated_at = now()
FROM unnest($1::text[], $2::text[]) AS n(order_id, status)
WHERE p.order_id = n.order_id AND p.status <> n.status
"""

PAYMENTS_FAILED = f"""
UPDATE payments AS p SET status = '{PaymentStatus.FAILED}', updated_at = now()
WHERE p.order_id = ANY($1::text[]) AND p.status = '{PaymentStatus.PENDING}'
"""

WEBHOOKS_SEEN = """
INSERT INTO processed_webhook_events (id, provider)
SELECT unnest($1::text[]), 'stripe' ON CONFLICT DO NOTHING
"""

SECTION_SOLD = """
UPDATE sections SET sold = sold + $3 WHERE event_id = $1 AND code = $2
RETURNING sold, capacity
"""


async def write_entries(
    conn: AsyncConnection, entries: Sequence[Entry], *, copy: bool = True
) -> int:
    """Writes confirmations and refunds in the caller's transaction; returns
    the orders newly recorded as paid (refunds do not count).

    Set-based: one upsert of every order in the batch, one COPY of their
    tickets, one update per section touched. An order already paid is left
    alone (ON CONFLICT … WHERE pending_payment), so its tickets are inserted
    only by the write that recorded it. ``copy=False`` inserts tickets with a
    plain INSERT instead (the benchmark's one-order-at-a-time reference).
    Refunds (``order_refunded``) are written after the batch's confirmations;
    checkouts (``order_placed``) before them, ended orders and payment
    statuses after.
    """
    await _write_placed(conn, entries)
    recorded = await _write_confirmations(conn, entries, copy=copy)
    await _write_refunds(conn, entries)
    await _write_ended(conn, entries)
    await _write_payment_news(conn, entries)
    return recorded


async def _write_placed(conn: AsyncConnection, entries: Sequence[Entry]) -> None:
    placed = {e.payload.order_id: e.payload for e in entries if isinstance(e.payload, OrderPlaced)}
    if not placed:
        return
    orders = sorted(placed.values(), key=lambda p: p.order_id)
    await conn.exec_driver_sql(
        ORDERS_PLACE,
        (
            [p.order_id for p in orders],
            [p.event_id for p in orders],
            [p.customer_id for p in orders],
            [p.hold_id for p in orders],
            [p.amount_cents for p in orders],
            [p.currency for p in orders],
            [json.dumps(p.items) for p in orders],
            [p.expires_at_ms for p in orders],
            [p.created_at_ms for p in orders],
        ),
    )
    paying = [p for p in orders if p.payment_intent]
    if paying:
        await conn.exec_driver_sql(
            PAYMENTS_PLACE,
            (
                [p.order_id for p in paying],
                [p.provider or "stripe" for p in paying],
                [p.payment_intent for p in paying],
                [p.amount_cents for p in paying],
                [p.currency for p in paying],
            ),
        )


async def _write_ended(conn: AsyncConnection, entries: Sequence[Entry]) -> None:
    ended = {e.payload.order_id: e.payload for e in entries if isinstance(e.payload, OrderEnded)}
    if not ended:
        return
    orders = sorted(ended.values(), key=lambda o: o.order_id)
    await conn.exec_driver_sql(
        ORDERS_END,
        (
            [o.order_id for o in orders],
            [o.event_id for o in orders],
            [o.customer_id for o in orders],
            [o.hold_id for o in orders],
            [o.status for o in orders],
            [o.reason for o in orders],
            [o.ended_at_ms for o in orders],
        ),
    )
    await conn.exec_driver_sql(
        PAYMENTS_SET,
        (
            [o.order_id for o in orders],
            [
                PaymentStatus.CANCELED
                if o.status == OrderStatus.CANCELLED
                else PaymentStatus.SUCCEEDED
                for o in orders
            ],
        ),
    )


async def _write_payment_news(conn: AsyncConnection, entries: Sequence[Entry]) -> None:
    """Payment statuses, and the Stripe events already handled (written behind:
    the webhook keeps its own record in Redis)."""
    failed = sorted(
        {
            e.payload.order_id
            for e in entries
            if isinstance(e.payload, PaymentUpdated) and e.payload.status == PaymentStatus.FAILED
        }
    )
    if failed:
        await conn.exec_driver_sql(PAYMENTS_FAILED, (failed,))
    sold = sorted({e.payload.order_id for e in entries if isinstance(e.payload, OrderConfirmed)})
    if sold:
        await conn.exec_driver_sql(PAYMENTS_SET, (sold, [str(PaymentStatus.SUCCEEDED)] * len(sold)))
    seen = sorted(
        {
            e.payload.stripe_event
            for e in entries
            if isinstance(e.payload, OrderConfirmed | OrderEnded) and e.payload.stripe_event
        }
    )
    if seen:
        await conn.exec_driver_sql(WEBHOOKS_SEEN, (seen,))


# 'pending_payment' too: with several consumers a refund may be committed
# before its sale's confirmation; the order is then refunded with no tickets,
# and the confirmation (which only upgrades pending_payment) writes nothing.
REFUND_ORDERS = f"""
UPDATE orders AS o SET status = '{REFUNDED}', refunded_at = to_timestamp(r.at_ms / 1000.0)
FROM unnest($1::text[], $2::bigint[]) AS r(id, at_ms)
WHERE o.id = r.id AND o.status IN ('{PAID}', '{PENDING}')
RETURNING o.id
"""

REFUND_TICKETS = f"""
UPDATE tickets SET status = '{TicketStatus.REFUNDED}'
WHERE order_id = ANY($1::text[]) AND status = '{VALID}'
RETURNING event_id, section_code
"""


async def _write_refunds(conn: AsyncConnection, entries: Sequence[Entry]) -> int:
    """Refunds after the confirmations of the same batch (a refund always
    follows its sale in the stream). A paid order becomes refunded once, its
    tickets are revoked and its sections' sold counts go down by as many; a
    redelivered refund finds the order no longer paid and changes nothing.
    Returns the orders newly refunded."""
    refunds = {
        e.payload.order_id: e.payload for e in entries if isinstance(e.payload, OrderRefunded)
    }
    if not refunds:
        return 0
    ids = sorted(refunds)
    at_ms = [refunds[i].refunded_at_ms for i in ids]
    # Through SQLAlchemy (it begins the transaction if no confirmation did).
    refunded = list((await conn.exec_driver_sql(REFUND_ORDERS, (ids, at_ms))).scalars())
    if not refunded:
        return 0  # redelivered: already written
    raw = (await conn.get_raw_connection()).driver_connection
    assert raw is not None and raw.is_in_transaction()
    revoked = await raw.fetch(REFUND_TICKETS, refunded)
    per_section = Counter((r["event_id"], r["section_code"]) for r in revoked)
    # Sorted, like the confirmations: section rows are locked in one order.
    for (event_id, code), n in sorted(per_section.items()):
        await raw.fetchrow(SECTION_SOLD, event_id, code, -n)
    return len(refunded)


async def _write_confirmations(
    conn: AsyncConnection, entries: Sequence[Entry], *, copy: bool
) -> int:
    by_order: dict[str, tuple[str, OrderConfirmed]] = {
        e.payload.order_id: (e.id, e.payload)
        for e in entries
        if isinstance(e.payload, OrderConfirmed)
    }
    if not by_order:
        return 0
    columns: tuple[list[Any], ...] = tuple([] for _ in range(8))
    for entry_id, sale in by_order.values():
        for column, value in zip(
            columns,
            (
                sale.order_id,
                sale.event_id,
                sale.customer_id,
                sale.hold_id,
                sale.amount_cents,
                sale.currency,
                sale.confirmed_at_ms,
                entry_id,
            ),
            strict=True,
        ):
            column.append(value)
    # Through SQLAlchemy first: that begins the caller's transaction on the
    # asyncpg connection, which the COPY below then joins.
    recorded = list((await conn.exec_driver_sql(ORDERS_UPSERT, columns)).scalars())
    raw = (await conn.get_raw_connection()).driver_connection
    assert raw is not None and raw.is_in_transaction()
    tickets: list[tuple[uuid.UUID, str, str, str, str | None, str]] = []
    per_section: Counter[tuple[str, str]] = Counter()
    for order_id in recorded:
        _, sale = by_order[order_id]
        event_id = sale.event_id
        for ticket_id, serial, code, seat in issued(
            order_id, sale.seats, sale.section, sale.quantity
        ):
            tickets.append((ticket_id, order_id, event_id, code, seat, serial))
            per_section[(event_id, code)] += 1
    if tickets and copy:
        await raw.copy_records_to_table("tickets", records=tickets, columns=TICKET_COLUMNS)
    elif tickets:
        await raw.execute(TICKETS_INSERT, *map(list, zip(*tickets, strict=True)))
    # Sorted, so concurrent writers lock section rows in one order (no deadlock).
    for (event_id, code), n in sorted(per_section.items()):
        sold, capacity = await raw.fetchrow(SECTION_SOLD, event_id, code, n)
        if sold > capacity:  # the CHECK constraint would refuse it too
            raise CapacityExceeded(f"{event_id}/{code}: {sold} tickets for {capacity}")
    return len(recorded)


# Ids and serials derived from the order (persistence.tickets.issued); the
# status from the column default.
TICKET_COLUMNS = ("id", "order_id", "event_id", "section_code", "seat_id", "serial")


async def outbox_lag(redis: AsyncRedis) -> Lag:
    """What every writer together has yet to write (for metrics and tests):
    acknowledged entries are deleted, so whatever a stream holds is pending."""
    members: Any = await redis.smembers(OUTBOX_REGISTRY)
    async with redis.pipeline(transaction=False) as pipe:
        for stream in members:
            pipe.xlen(stream)
            pipe.xrange(stream, count=1)
        replies: list[Any] = await pipe.execute()
    pending, oldest_ms = 0, None
    for length, first in zip(replies[::2], replies[1::2], strict=True):
        pending += length
        if first:
            entry_id = first[0][0]
            entry_ms = int(
                (entry_id.decode() if isinstance(entry_id, bytes) else entry_id).split("-")[0]
            )
            oldest_ms = entry_ms if oldest_ms is None else min(oldest_ms, entry_ms)
    age = 0.0 if oldest_ms is None else max(0.0, time.time() - oldest_ms / 1000)
    return Lag(pending=pending, oldest_age_s=age)


class OutboxWriter:
    """One consumer of the ``writers`` group; run several for more throughput."""

    def __init__(
        self,
        redis: AsyncRedis,
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
        self._idle_poll_s = CLUSTER_POLL_MIN_S
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
                try:
                    start, claimed, *_ = await self.redis.xautoclaim(
                        stream,
                        GROUP,
                        self.consumer,
                        min_idle_time=min_idle_ms,
                        start_id=start,
                        count=self.batch_size,
                    )
                except ResponseError as exc:
                    if not _stream_gone(exc):
                        raise
                    break  # retired, with nothing pending: the next refresh drops it
                entries = [decode_entry(stream, i, f) for i, f in claimed if f]
                if entries:
                    await self._persist(entries)
                if start in (b"0-0", "0-0"):
                    break

    async def lag(self) -> Lag:
        await self._refresh_streams()
        return await outbox_lag(self.redis)

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
        try:
            if is_cluster(self.redis):
                return await self._poll_each_stream(block)
            reply: Any = await self.redis.xreadgroup(
                GROUP,
                self.consumer,
                dict.fromkeys(self._streams, ">"),
                count=self.batch_size,
                block=self.block_ms if block else None,
            )
        except ResponseError as exc:
            if not _stream_gone(exc):
                raise
            # A finished event's inventory was retired (persistence.retire),
            # outbox and all, under this read: read the registry afresh, and
            # make the groups again of any stream a rebuild brought back.
            self._streams = []
            await self._refresh_streams()
            return []
        return [decode_entry(stream, i, f) for stream, items in reply or [] for i, f in items]

    async def _poll_each_stream(self, block: bool) -> list[Entry]:
        """A cluster's read: one XREADGROUP per stream (each its own slot), all
        in one pipeline, which redis-py sends as one round trip per node. None
        may block there, so when nothing came the writer waits a poll interval,
        growing while idle; when something came, it reads again at once."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for stream in self._streams:
                pipe.xreadgroup(GROUP, self.consumer, {stream: ">"}, count=self.batch_size)
            replies: list[Any] = await pipe.execute()
        entries = [
            decode_entry(stream, i, f)
            for reply in replies
            for stream, items in reply or []
            for i, f in items
        ]
        if entries:
            self._idle_poll_s = CLUSTER_POLL_MIN_S
        elif block:
            await asyncio.sleep(self._idle_poll_s)
            self._idle_poll_s = min(self._idle_poll_s * 2, self.block_ms / 1000)
        return entries

    async def _persist(self, entries: list[Entry]) -> None:
        """Commits, then acknowledges; retries with backoff while Postgres is
        away (for as long as it takes: the stream holds the entries meanwhile)."""
        retrying = AsyncRetrying(
            retry=retry_if_exception(_unavailable),
            wait=wait_exponential(multiplier=0.05, max=self.max_backoff_s),
            before_sleep=_log_unavailable,
            reraise=True,
        )
        try:
            async for attempt in retrying:
                with attempt:
                    async with self.db.begin() as conn:
                        self.written += await write_entries(conn, entries)
        except REFUSED:
            await self._persist_one_by_one(entries)
            return
        await self._acknowledge(entries)

    async def _persist_one_by_one(self, entries: list[Entry]) -> None:
        """Isolates entries Postgres refuses, so one bad sale cannot block the rest."""
        for entry in entries:
            try:
                async with self.db.begin() as conn:
                    self.written += await write_entries(conn, [entry])
            except REFUSED as exc:
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


async def record_sale(db: AsyncEngine, sale: OrderConfirmed) -> None:
    """Writes one sale now, as the writer would (and as idempotently): for the
    door, which must admit a ticket the writer has not reached yet."""
    async with db.begin() as conn:
        await write_entries(conn, [Entry("", "0-0", {}, sale)])


def _log_unavailable(state: RetryCallState) -> None:
    exc = state.outcome.exception() if state.outcome else None
    delay = state.next_action.sleep if state.next_action else 0.0
    log.warning("postgres unavailable (%s); retrying in %.2fs", type(exc).__name__, delay)


async def run_writer(
    redis_url: str,
    database_url: str,
    stop: asyncio.Event | None = None,
    *,
    redis_cluster: bool = False,
    consumers: int = 2,
    retire_after_s: float | None = None,
    retire_interval_s: float = 600.0,
    **options: Any,
) -> None:
    """`onsale writer`: ``consumers`` writers in one process until stopped.

    While one waits on Postgres's commit another decodes and sends the next
    batch; on two cores, two consumers write about 1.4x what one does.
    ``redis_cluster``: ``redis_url`` names a Redis Cluster. With
    ``retire_after_s``, finished events' inventories leave Redis that long
    after they started (persistence.retire), looked for every
    ``retire_interval_s``.
    """
    from persistence.db import create_engine
    from persistence.retire import retire_periodically

    stop = stop or asyncio.Event()
    redis = redis_client(redis_url, cluster=redis_cluster)
    db = create_engine(database_url, pool_size=consumers + 2)
    tasks = [OutboxWriter(redis, db, **options).run(stop) for _ in range(consumers)]
    if retire_after_s is not None:
        tasks.append(
            retire_periodically(
                redis, db, stop, after_s=retire_after_s, interval_s=retire_interval_s
            )
        )
    try:
        await asyncio.gather(*tasks)
    finally:
        await redis.aclose()
        await db.dispose()
