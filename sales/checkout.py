"""Checkout: turning a buyer's live hold into an order awaiting payment.

One order per hold, with an id derived from the hold's, so a retried checkout
(and its PaymentIntent, whose idempotency key is the order id) lands on the
same order. The order is recorded by the engine, in the hold's record, in the
same script call that keeps the hold for the payment window; it reaches
Postgres through the outbox, like a sale, so checkout writes nothing to
Postgres. The sale itself is made when the payment arrives
(:mod:`sales.settlement`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from engine.client import EngineClient
from engine.errors import EventNotOnSale, OrderExists
from engine.model import PlaceOrder
from engine.redis_client import AsyncRedis
from persistence.orders import OrderRecord
from sales import lookups
from sales.access import Principal
from sales.errors import SaleRefused
from sales.holds import EventLookup, own_hold, price
from sales.items import items_to_json
from sales.orders import engine_order, order_id_for
from sales.payments import Intent, Payments, PaymentsUnavailable
from sales.queue import note_checkout
from sales.vocabulary import EventStatus, HoldStatus


@dataclass(frozen=True)
class Checkout:
    order: OrderRecord
    intent: Intent | None  # None when no payment provider is configured
    provider: str | None


async def checkout(
    engine: EngineClient,
    events: EventLookup,
    redis: AsyncRedis,
    payments: Payments | None,
    *,
    hold_id: str,
    user: Principal,
    payment_window_s: int,
) -> Checkout:
    """An order for the caller's live hold, with a PaymentIntent for the
    amount priced here; the hold keeps its own expiry. ``payment_window_s``
    bounds how long a payment may still come: reconciliation gives the
    PaymentIntent up (cancels it) only once the hold and that window from
    checkout have both ended, so a buyer slower than the hold can still pay
    (a late sale)."""
    began = time.perf_counter()
    event, hold = await own_hold(events, engine, hold_id, user)
    if event.status is EventStatus.CANCELLED:
        raise SaleRefused("event_ended", "the event is cancelled")
    if hold.order is not None:
        raise SaleRefused("order_exists", order_id=hold.order.order_id)
    if hold.status is HoldStatus.CONFIRMED and hold.order_id:
        raise SaleRefused("order_exists", order_id=hold.order_id)
    if hold.status is not HoldStatus.HELD:
        raise SaleRefused("hold_expired", f"the hold is {hold.status}")
    amount, items = price(event, hold.seats, hold.section, hold.quantity)
    order_id = order_id_for(hold.hold_id)
    intent = None
    if payments is not None:  # first: idempotent by order id, so a retry reuses it
        try:
            intent = await payments.create_intent(
                order_id=order_id, event_id=event.id, amount_cents=amount, currency=event.currency
            )
        except PaymentsUnavailable as exc:
            raise SaleRefused("payments_unavailable", str(exc)[:200]) from exc
    command = PlaceOrder(
        hold_id=hold.hold_id,
        customer_id=user.customer_id,
        order_id=order_id,
        # The hold keeps its own expiry: checking out is not paying. It is
        # kept for the payment window only once Stripe says a payment is under
        # way (sales.settlement.Settlement.under_way).
        until_ms=hold.expires_at_ms,
        amount_cents=amount,
        currency=event.currency,
        items=tuple(items_to_json(items)),
        payment_intent=intent.id if intent else "",
        provider=payments.provider if payments else "",
    )
    try:
        placed = await engine.place_order(event.id, command)
    except OrderExists as exc:
        raise SaleRefused("order_exists", order_id=exc.context.get("order_id")) from exc
    except EventNotOnSale as exc:  # cancelled meanwhile: cancel is final
        raise SaleRefused("event_ended", "the event is cancelled") from exc
    await lookups.remember_checkout(
        redis,
        order_id=order_id,
        customer_id=user.customer_id,
        intent_id=intent.id if intent else None,
        created_ms=placed.created_at_ms,
        # given up only once both the hold and the window from checkout ended
        expires_ms=max(placed.expires_at_ms, placed.created_at_ms + payment_window_s * 1000),
    )
    order = await engine_order(engine, events, order_id)
    assert order is not None  # the engine has just recorded it
    await note_checkout(engine, event.id, time.perf_counter() - began)
    return Checkout(order, intent, payments.provider if payments is not None else None)
