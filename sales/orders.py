"""Orders as their buyer sees them: the engine's truth first, then Postgres.

An order is made at checkout in the engine, inside its hold's record, and
reaches Postgres through the outbox like a sale. Until the hold's record is
forgotten (a day after the hold ended) the engine knows the order's state at
once: a paid order reads ``paid`` whether or not the writer has caught up,
and never ``expired``; its tickets, whose ids and serials derive from the
order, read the same before and after the writer records them. Older orders,
and those made before orders lived in the engine, come from Postgres.

Order ids name their hold and so their event: ``or_<token>.<event id>`` for the
hold ``hl_<token>.<event id>``.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime

from sqlalchemy.ext.asyncio import AsyncEngine

from engine.client import EngineClient
from engine.model import HoldView
from engine.outbox import OrderConfirmed
from engine.redis_client import AsyncRedis
from persistence import orders as order_store
from persistence import payments as payment_store
from persistence.orders import OrderRecord, TicketRecord
from persistence.tickets import issued
from persistence.writer import record_sale
from sales import lookups
from sales.access import Principal, may_see_sale
from sales.errors import SaleRefused
from sales.holds import EventLookup
from sales.items import Places, items_from_json
from sales.vocabulary import HoldStatus, OrderStatus, TicketStatus


def order_id_for(hold_id: str) -> str:
    """One order per hold, with an id known before anything is written: a
    retried checkout (and its PaymentIntent) lands on the same order."""
    return "or_" + hold_id.removeprefix("hl_")


def hold_of(order_id: str) -> str | None:
    """The hold an order buys, for orders made in the engine; None for older ids."""
    if not order_id.startswith("or_") or "." not in order_id:
        return None
    return "hl_" + order_id.removeprefix("or_")


def status_shown(order: OrderRecord, now: datetime | None = None) -> OrderStatus:
    """What the buyer sees: a pending order whose hold has lapsed is
    ``expired`` (its seats are back on sale), whatever Postgres still says."""
    now = now or datetime.now(UTC)
    if (
        order.status is OrderStatus.PENDING_PAYMENT
        and order.expires_at is not None
        and order.expires_at <= now
    ):
        return OrderStatus.EXPIRED
    return order.status


def _at(ms: int | None) -> datetime | None:
    return None if ms is None else datetime.fromtimestamp(ms / 1000, UTC)


def from_engine(
    event_id: str, organizer_id: uuid.UUID | None, hold: HoldView
) -> OrderRecord | None:
    """The order placed on ``hold`` as the engine has it now, tickets included."""
    placed = hold.order
    if placed is None:
        return None
    sold = hold.order_id == placed.order_id
    if sold and hold.status is HoldStatus.REFUNDED:
        status = OrderStatus.REFUNDED
    elif sold and hold.status is HoldStatus.CONFIRMED:
        status = OrderStatus.PAID
    elif placed.ended is not None:
        status = OrderStatus(placed.ended[0])
    else:
        status = OrderStatus.PENDING_PAYMENT
    items = items_from_json(placed.items)
    tickets: tuple[TicketRecord, ...] = ()
    if status in (OrderStatus.PAID, OrderStatus.REFUNDED):
        places = Places.of(items)
        ticket_status = TicketStatus.VALID if status is OrderStatus.PAID else TicketStatus.REFUNDED
        tickets = tuple(
            TicketRecord(ticket_id, event_id, code, seat, ticket_status, serial)
            for ticket_id, serial, code, seat in issued(
                placed.order_id, places.seats, places.section, places.quantity
            )
        )
    ended_at = placed.ended[2] if placed.ended else None
    return OrderRecord(
        id=placed.order_id,
        event_id=event_id,
        event_organizer_id=organizer_id,
        customer_id=hold.customer_id,
        hold_id=hold.hold_id,
        status=status,
        amount_cents=placed.amount_cents,
        currency=placed.currency,
        items=items,
        created_at=_at(placed.created_at_ms) or datetime.now(UTC),
        expires_at=_at(hold.expires_at_ms),
        confirmed_at=_at(hold.sold_at_ms) if sold else None,
        refunded_at=_at(hold.refunded_at_ms)
        or (_at(ended_at) if status is OrderStatus.REFUNDED else None),
        status_reason=placed.ended[1] or None if placed.ended else None,
        tickets=tickets,
    )


async def engine_order(
    engine: EngineClient, events: EventLookup, order_id: str
) -> OrderRecord | None:
    """The order as the engine has it now, while it keeps the hold's record."""
    hold_id = hold_of(order_id)
    if hold_id is None:
        return None
    event_id = hold_id.partition(".")[2]
    hold = await engine.hold(event_id, hold_id)
    if hold is None or hold.order is None or hold.order.order_id != order_id:
        return None
    event = await events.get(event_id)
    return from_engine(event_id, event.organizer_id if event else None, hold)


async def current_order(
    db: AsyncEngine, engine: EngineClient, events: EventLookup, order_id: str
) -> OrderRecord | None:
    """The order now: from its hold's record while the engine keeps it,
    otherwise from Postgres."""
    found = await engine_order(engine, events, order_id)
    return found if found is not None else await order_store.get_order(db, order_id)


def may_see(order: OrderRecord, user: Principal) -> bool:
    return may_see_sale(order.customer_id, order.event_organizer_id, user)


async def order_for(
    db: AsyncEngine, engine: EngineClient, events: EventLookup, order_id: str, user: Principal
) -> OrderRecord:
    """The order with its tickets, to its buyer, the event's organizer and admins."""
    order = await current_order(db, engine, events, order_id)
    if order is None or not may_see(order, user):
        raise SaleRefused("not_found", "no such order")
    return order


async def payment_intent_of(
    db: AsyncEngine, engine: EngineClient, order: OrderRecord
) -> str | None:
    """The PaymentIntent that pays for the order: the engine's, or Postgres's."""
    hold_id = hold_of(order.id)
    if hold_id is not None:
        hold = await engine.hold(order.event_id, hold_id)
        if hold is not None and hold.order is not None and hold.order.payment_intent:
            return hold.order.payment_intent
    payment = await payment_store.payment_of(db, order.id)
    return payment.payment_intent_id if payment else None


async def order_with_payment(
    db: AsyncEngine, engine: EngineClient, events: EventLookup, order_id: str, user: Principal
) -> tuple[OrderRecord, str | None]:
    order = await order_for(db, engine, events, order_id, user)
    return order, await payment_intent_of(db, engine, order)


async def my_orders(
    db: AsyncEngine, engine: EngineClient, events: EventLookup, redis: AsyncRedis, user: Principal
) -> list[OrderRecord]:
    """The caller's orders, newest first: Postgres's, with the engine's word
    on those it still knows and the recent ones the writer has not written."""
    stored, recent = await asyncio.gather(
        order_store.list_orders(db, user.customer_id),
        lookups.recent_orders(redis, user.customer_id),
    )
    by_id = {order.id: order for order in stored}
    fresh = await asyncio.gather(*(engine_order(engine, events, i) for i in recent))
    for order in fresh:
        if order is not None and order.customer_id == user.customer_id:
            by_id[order.id] = order
    return sorted(by_id.values(), key=lambda o: (o.created_at, o.id), reverse=True)[:100]


async def record_paid(db: AsyncEngine, order: OrderRecord) -> None:
    """A paid order the writer has not recorded yet, written now as the writer
    will write it (idempotent by order id): for the door and refunds, which
    need its tickets in Postgres before they go ahead."""
    places = Places.of(order.items)
    confirmed_ms = int((order.confirmed_at or order.created_at).timestamp() * 1000)
    await record_sale(
        db,
        OrderConfirmed(
            event_id=order.event_id,
            order_id=order.id,
            hold_id=order.hold_id,
            customer_id=order.customer_id,
            seats=places.seats or (),
            section=places.section,
            quantity=places.quantity,
            confirmed_at_ms=confirmed_ms,
            meta={"amount_cents": order.amount_cents, "currency": order.currency},
        ),
    )
