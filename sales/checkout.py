"""Checkout: turning a buyer's live hold into an order awaiting payment.

One order per hold, with an id derived from the hold's, so a retried checkout
(and its PaymentIntent, whose idempotency key is the order id) lands on the
same order. The hold is kept for the payment window, never longer; the sale
itself is made when the payment arrives (:mod:`sales.settlement`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy.ext.asyncio import AsyncEngine

from engine.client import EngineClient
from persistence import events as event_store
from persistence import orders as order_store
from persistence import payments as payment_store
from persistence.orders import OrderExists, OrderRecord
from sales.access import Principal
from sales.errors import SaleRefused
from sales.holds import EventLookup, own_hold, price
from sales.payments import Intent, Payments, PaymentsUnavailable
from sales.vocabulary import EventStatus, HoldStatus


@dataclass(frozen=True)
class Checkout:
    order: OrderRecord
    intent: Intent | None  # None when no payment provider is configured
    provider: str | None


async def checkout(
    db: AsyncEngine,
    engine: EngineClient,
    events: EventLookup,
    payments: Payments | None,
    *,
    hold_id: str,
    user: Principal,
    payment_window_s: int,
) -> Checkout:
    """An order for the caller's live hold, with a PaymentIntent for the
    amount priced here; the hold is extended to the payment window."""
    event, hold = await own_hold(events, engine, hold_id, user)
    status = await event_store.event_status(db, event.id)  # not cached: cancel is final
    if status is None or status is EventStatus.CANCELLED:
        raise SaleRefused("event_ended", "the event is cancelled")
    if hold.status is HoldStatus.CONFIRMED and hold.order_id:
        raise SaleRefused("order_exists", order_id=hold.order_id)
    if hold.status is not HoldStatus.HELD:
        raise SaleRefused("hold_expired", f"the hold is {hold.status}")
    amount, items = price(event, hold.seats, hold.section, hold.quantity)
    order_id = order_store.order_id_for(hold.hold_id)
    intent = None
    if payments is not None:  # first: idempotent by order id, so a retry reuses it
        try:
            intent = await payments.create_intent(
                order_id=order_id, event_id=event.id, amount_cents=amount, currency=event.currency
            )
        except PaymentsUnavailable as exc:
            raise SaleRefused("payments_unavailable", str(exc)[:200]) from exc
    until_ms = int((time.time() + payment_window_s) * 1000)
    held = await engine.extend(event.id, hold.hold_id, user.customer_id, until_ms)
    try:
        order = await order_store.create_order(
            db,
            order_id=order_id,
            event_id=event.id,
            customer_id=user.customer_id,
            hold_id=hold.hold_id,
            amount_cents=amount,
            currency=event.currency,
            items=items,
            expires_at=datetime.fromtimestamp(held.expires_at_ms / 1000, UTC),
        )
    except OrderExists as exc:
        raise SaleRefused("order_exists", order_id=exc.order_id) from exc
    if intent is not None and payments is not None:
        await payment_store.record_payment(
            db,
            order_id=order_id,
            provider=payments.provider,
            payment_intent_id=intent.id,
            amount_cents=amount,
            currency=event.currency,
        )
    return Checkout(order, intent, payments.provider if payments is not None else None)
