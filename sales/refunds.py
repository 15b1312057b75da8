"""Refunds: the money back through Stripe, the seats back on sale.

A refund is asked of Stripe first; once Stripe says it succeeded, the engine
returns the order's seats or GA places to sale at once (idempotently per
order) and appends the refund to the outbox, which marks the order
``refunded`` and revokes its tickets in Postgres. A refund made in Stripe's
dashboard arrives as ``charge.refunded`` and ends the same way
(:mod:`sales.settlement`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy.ext.asyncio import AsyncEngine

from engine.client import EngineClient
from persistence import orders as order_store
from persistence.events import EventRecord
from persistence.orders import OrderRecord, RefundClaim
from sales.access import Principal, may_manage
from sales.errors import SaleRefused
from sales.holds import EventLookup
from sales.items import Places
from sales.orders import order_for, payment_intent_of, record_paid
from sales.payments import Payments, PaymentsUnavailable
from sales.vocabulary import EventStatus, OrderStatus


@dataclass(frozen=True)
class Refund:
    order_id: str
    done: bool  # the order was already refunded: nothing was asked of Stripe
    provider_status: str  # Stripe's refund status ("succeeded", "pending", …)


async def refund_order(
    db: AsyncEngine,
    engine: EngineClient,
    events: EventLookup,
    payments: Payments | None,
    order_id: str,
    user: Principal,
    *,
    claim_s: float = 300,
) -> Refund:
    """Refunds a paid order (its buyer, the event's organizer, admins), paid
    as the engine knows it: whether or not the writer has recorded it yet.

    Refused once a ticket of the order was admitted at the door, and to the
    buyer once the event has started or is closed (then it is the organizer's
    call). The refund is claimed in Postgres before Stripe is asked, so that
    the door refuses its tickets from then on and concurrent requests for one
    order ask Stripe once (``refund_in_progress`` for the others)."""
    order = await order_for(db, engine, events, order_id, user)
    if order.status is OrderStatus.REFUNDED:
        return Refund(order.id, True, "succeeded")
    if order.status is not OrderStatus.PAID:
        raise SaleRefused("order_not_paid", f"the order is {order.status}")
    event = await events.get(order.event_id)
    if event is not None and not may_refund_now(event, user):
        raise SaleRefused(
            "refund_closed", "the event has started or closed: ask its organizer for a refund"
        )
    intent_id = await payment_intent_of(db, engine, order)
    if payments is None or intent_id is None:
        raise SaleRefused("payments_unavailable", "no payment provider for this order")
    claim = await order_store.claim_refund(db, order.id, claim_s)
    if claim is RefundClaim.UNKNOWN:  # paid, not written behind yet: its tickets go in now
        await record_paid(db, order)
        claim = await order_store.claim_refund(db, order.id, claim_s)
    if claim is RefundClaim.CHECKED_IN:
        raise SaleRefused("ticket_checked_in", "a ticket of this order was admitted at the door")
    if claim is not RefundClaim.CLAIMED:
        raise SaleRefused("refund_in_progress", "this order's refund is under way")
    try:
        status = await payments.refund(intent_id, reason_key="requested")
    except PaymentsUnavailable as exc:
        await order_store.release_refund_claim(db, order.id)
        raise SaleRefused("payments_unavailable", str(exc)[:200]) from exc
    if status == "succeeded":
        await return_to_sale(engine, order)
    return Refund(order.id, False, status)


def may_refund_now(event: EventRecord, user: Principal) -> bool:
    """The buyer, until the event starts and while it is not closed (a
    cancelled event is refunded whenever asked); the organizer and admins
    always."""
    if may_manage(event, user):
        return True
    return event.status is EventStatus.CANCELLED or (
        event.status is not EventStatus.CLOSED and datetime.now(UTC) < event.starts_at
    )


async def return_to_sale(engine: EngineClient, order: OrderRecord) -> None:
    """The engine frees the order's seats or GA places (once per order) and
    appends the refund to the outbox, which marks it in Postgres."""
    places = Places.of(order.items)
    await engine.refund(
        order.event_id,
        order.id,
        order.hold_id,
        seats=places.seats,
        section=places.section,
        quantity=places.quantity,
    )
