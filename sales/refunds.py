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

from sqlalchemy.ext.asyncio import AsyncEngine

from engine.client import EngineClient
from persistence.orders import OrderRecord
from sales.access import Principal
from sales.errors import SaleRefused
from sales.holds import EventLookup
from sales.items import Places
from sales.orders import order_for, payment_intent_of
from sales.payments import Payments, PaymentsUnavailable
from sales.vocabulary import OrderStatus


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
) -> Refund:
    """Refunds a paid order (its buyer, the event's organizer, admins), paid
    as the engine knows it: whether or not the writer has recorded it yet."""
    order = await order_for(db, engine, events, order_id, user)
    if order.status is OrderStatus.REFUNDED:
        return Refund(order.id, True, "succeeded")
    if order.status is not OrderStatus.PAID:
        raise SaleRefused("order_not_paid", f"the order is {order.status}")
    intent_id = await payment_intent_of(db, engine, order)
    if payments is None or intent_id is None:
        raise SaleRefused("payments_unavailable", "no payment provider for this order")
    try:
        status = await payments.refund(intent_id, reason_key="requested")
    except PaymentsUnavailable as exc:
        raise SaleRefused("payments_unavailable", str(exc)[:200]) from exc
    if status == "succeeded":
        await return_to_sale(engine, order)
    return Refund(order.id, False, status)


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
