"""Rebuilding an event's inventory in Redis from Postgres (DESIGN rule 8).

Holds are ephemeral and are not rebuilt; sales are: every valid ticket in
Postgres, plus every confirmation still waiting in the outbox stream, is
marked sold in the same script that lays the seat map out again.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select

from engine.scripts import EventKeys, InventoryScripts
from persistence.catalog import inventory_of
from persistence.db import create_engine
from persistence.models import Event, Order, Ticket


@dataclass(frozen=True)
class PostgresRestore:
    """Handed to each event actor (picklable): called when its inventory is missing."""

    database_url: str

    async def __call__(self, scripts: InventoryScripts, event_id: str) -> bool:
        db = create_engine(self.database_url, pool_size=1)
        try:
            async with db.connect() as conn:
                event = (
                    await conn.execute(
                        select(Event.status, Event.max_tickets_per_customer).where(
                            Event.id == event_id
                        )
                    )
                ).one_or_none()
                if event is None or event.status == "draft":
                    return False  # never published: nothing to rebuild
                sections = await inventory_of(conn, event_id)
                tickets = (
                    await conn.execute(
                        select(
                            Ticket.order_id, Ticket.seat_id, Ticket.section_code, Order.customer_id
                        )
                        .join(Order, Order.id == Ticket.order_id)
                        .where(Ticket.event_id == event_id, Ticket.status == "valid")
                    )
                ).all()
        finally:
            await db.dispose()
        sold = _sold_state(
            [(t.order_id, t.seat_id, t.section_code, t.customer_id) for t in tickets]
        )
        await _add_unwritten_outbox(scripts, event_id, sold, {t.order_id for t in tickets})
        # Viewers' last version came from before the loss: start above any of
        # them, so the jump reads as a gap and they resync.
        sold["version"] = int(time.time() * 1000)
        return await scripts.load_inventory(
            event_id,
            sections,
            status=event.status,
            max_per_customer=event.max_tickets_per_customer,
            sold=sold,
        )


def _sold_state(tickets: list[tuple[str, str | None, str, str]]) -> dict[str, Any]:
    seats: dict[str, str] = {}
    general: Counter[str] = Counter()
    customers: Counter[str] = Counter()
    for order_id, seat_id, section_code, customer_id in tickets:
        if seat_id:
            seats[seat_id] = order_id
        else:
            general[section_code] += 1
        customers[customer_id] += 1
    return {"seats": seats, "general": dict(general), "customers": dict(customers)}


async def _add_unwritten_outbox(
    scripts: InventoryScripts, event_id: str, sold: dict[str, Any], written: set[str]
) -> None:
    """Confirmations the writer has not recorded yet are sales too."""
    entries: Any = await scripts.redis.xrange(EventKeys(event_id).outbox)
    for _, raw in entries:
        fields = {k.decode(): v.decode() for k, v in raw.items()}
        if fields.get("type") == "order_refunded":
            _unsell(sold, fields)
            continue
        if fields.get("type") != "order_confirmed" or fields["order_id"] in written:
            continue
        written.add(fields["order_id"])
        quantity = int(fields["quantity"])
        if fields["seats"]:
            for seat in fields["seats"].split(","):
                sold["seats"][seat] = fields["order_id"]
        else:
            general = sold["general"]
            general[fields["section"]] = general.get(fields["section"], 0) + quantity
        customers = sold["customers"]
        customers[fields["customer_id"]] = customers.get(fields["customer_id"], 0) + quantity


def _unsell(sold: dict[str, Any], fields: dict[str, str]) -> None:
    """A refund the writer has not recorded yet: its seats or places are free."""
    order_id, quantity = fields["order_id"], int(fields["quantity"])
    if fields["seats"]:
        for seat in fields["seats"].split(","):
            if sold["seats"].get(seat) == order_id:
                del sold["seats"][seat]
    elif fields["section"]:
        general = sold["general"]
        general[fields["section"]] = max(0, general.get(fields["section"], 0) - quantity)
