"""Rebuilding an event's inventory in Redis from Postgres (DESIGN rule 8).

Holds are ephemeral and are not rebuilt; sales are: every valid ticket in
Postgres, plus every confirmation still waiting in the outbox stream, less
every refund still waiting there, is marked sold in the same script that lays
the seat map out again.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select

from engine.outbox import OrderConfirmed, OrderRefunded, parse_entry
from engine.scripts import EventKeys, InventoryScripts
from persistence.catalog import inventory_of
from persistence.db import create_engine
from persistence.events import get_event
from persistence.models import Event, Order, Ticket
from persistence.queues import get_queue
from sales.catalog import write_card
from sales.vocabulary import EventStatus, OrderStatus, TicketStatus


@dataclass(frozen=True)
class PostgresRestore:
    """Handed to each event actor (picklable): called when its inventory is missing."""

    database_url: str
    # After a rebuild, joins this long get random places again (lua/queue.lua).
    queue_reform_s: float = 60.0

    async def __call__(self, scripts: InventoryScripts, event_id: str) -> bool:
        db = create_engine(self.database_url, pool_size=1)
        try:
            async with db.connect() as conn:
                event = (
                    await conn.execute(
                        select(
                            Event.status,
                            Event.max_tickets_per_customer,
                            Event.max_held_per_customer,
                        ).where(Event.id == event_id)
                    )
                ).one_or_none()
                if event is None or event.status == EventStatus.DRAFT:
                    return False  # never published: nothing to rebuild
                sections = await inventory_of(conn, event_id)
                tickets = (
                    await conn.execute(
                        select(
                            Ticket.order_id, Ticket.seat_id, Ticket.section_code, Order.customer_id
                        )
                        .join(Order, Order.id == Ticket.order_id)
                        .where(Ticket.event_id == event_id, Ticket.status == TicketStatus.VALID)
                    )
                ).all()
                # Refunded orders too: a confirmation of one still in the
                # outbox (written, not yet acknowledged) must not sell it again.
                recorded = {t.order_id for t in tickets} | set(
                    (
                        await conn.execute(
                            select(Order.id).where(
                                Order.event_id == event_id, Order.status == OrderStatus.REFUNDED
                            )
                        )
                    ).scalars()
                )
            record = await get_event(db, event_id)  # for the card
            room = await get_queue(db, event_id)
        finally:
            await db.dispose()
        sales = _sales_of([(t.order_id, t.seat_id, t.section_code, t.customer_id) for t in tickets])
        refunded = await _add_unwritten_outbox(scripts, event_id, sales, recorded)
        sold = _sold_state(sales)
        # Written with the inventory, so that a retried refund stays a replay.
        sold["refunds"] = refunded
        # Viewers' last version came from before the loss: start above any of
        # them, so the jump reads as a gap and they resync.
        sold["version"] = int(time.time() * 1000)
        if room is not None:
            # The waiting room's settings come back first (the inventory then
            # loads with holds needing a pass); who waited is lost with Redis:
            # joins for a while get random places again, and passes issued
            # before now stay good on their signature (lua/queue.lua).
            await scripts.queue(
                event_id,
                "configure",
                room.engine_settings(rebuilt=True, reform_s=self.queue_reform_s),
            )
        loaded = await scripts.load_inventory(
            event_id,
            sections,
            status=EventStatus(event.status),
            max_per_customer=event.max_tickets_per_customer,
            max_held_per_customer=event.max_held_per_customer,
            sold=sold,
        )
        if loaded and record is not None:  # and the card public reads show
            await write_card(scripts, record)
        return loaded


@dataclass
class _Sale:
    """What one order holds in the inventory being rebuilt."""

    customer_id: str
    seats: list[str] = field(default_factory=list)
    general: Counter[str] = field(default_factory=Counter)

    @property
    def quantity(self) -> int:
        return len(self.seats) + sum(self.general.values())


def _sales_of(tickets: list[tuple[str, str | None, str, str]]) -> dict[str, _Sale]:
    sales: dict[str, _Sale] = {}
    for order_id, seat_id, section_code, customer_id in tickets:
        sale = sales.setdefault(order_id, _Sale(customer_id))
        if seat_id:
            sale.seats.append(seat_id)
        else:
            sale.general[section_code] += 1
    return sales


def _sold_state(sales: dict[str, _Sale]) -> dict[str, Any]:
    seats: dict[str, str] = {}
    general: Counter[str] = Counter()
    customers: Counter[str] = Counter()
    for order_id, sale in sales.items():
        for seat in sale.seats:
            seats[seat] = order_id
        general.update(sale.general)
        customers[sale.customer_id] += sale.quantity
    return {
        "seats": seats,
        "general": {code: n for code, n in general.items() if n > 0},
        "customers": {c: n for c, n in customers.items() if n > 0},
    }


async def _add_unwritten_outbox(
    scripts: InventoryScripts, event_id: str, sales: dict[str, _Sale], recorded: set[str]
) -> dict[str, int]:
    """Entries the writer has not recorded yet: confirmations are sales too,
    refunds take their order's sale back (once: a refund already written left
    no valid tickets to take). ``recorded``: orders Postgres already has as
    paid or refunded. Returns the refunded orders with their refund times."""
    entries: Any = await scripts.redis.xrange(EventKeys(event_id).outbox)
    refunded: dict[str, int] = {}
    for _, raw in entries:
        entry = parse_entry(raw)
        if isinstance(entry, OrderRefunded):
            sales.pop(entry.order_id, None)
            refunded[entry.order_id] = entry.refunded_at_ms
            continue
        if (
            not isinstance(entry, OrderConfirmed)
            or entry.order_id in recorded
            or entry.order_id in refunded
        ):
            continue
        recorded.add(entry.order_id)
        sale = sales.setdefault(entry.order_id, _Sale(entry.customer_id))
        if entry.seats:
            sale.seats.extend(entry.seats)
        elif entry.section:
            sale.general[entry.section] += entry.quantity
    return refunded
