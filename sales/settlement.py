"""Settling payments: what each Stripe event does to an order.

A verified Stripe event is handled once: the event id is recorded after it is
handled, so a redelivery is answered without doing anything, while a failure
(Stripe unreachable for a refund, the engine away) raises, and Stripe
redelivers until it succeeds. Every step is idempotent by order id, so even a
handled event delivered twice at once sells nothing twice.

- ``payment_intent.succeeded``: sell the hold to the order. If the hold lapsed,
  sell the same seats if they are still free (a late sale); if someone else has
  them, refund the payment (``refunded``, reason ``seats_resold``).
- ``payment_intent.payment_failed``: nothing to do; the buyer may try another
  card while the hold lasts, then it frees itself.
- ``payment_intent.canceled``: the order ends ``cancelled``, the hold is released.
- ``charge.refunded`` (a refund made in Stripe's dashboard): the seats go back
  on sale, as for a refund asked through onsale.
"""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from engine.client import EngineClient
from engine.errors import EventNotOnSale, HoldExpired, HoldNotFound, SeatsUnavailable, SoldOut
from persistence import orders as order_store
from persistence import payments as payment_store
from persistence.orders import OrderRecord
from sales.items import Places
from sales.payments import Payments
from sales.refunds import return_to_sale
from sales.vocabulary import OrderStatus, PaymentStatus

log = logging.getLogger(__name__)


async def handle_stripe_event(
    db: AsyncEngine, engine: EngineClient, payments: Payments, event: dict[str, Any]
) -> bool:
    """Applies a verified Stripe event; False if it was handled before."""
    if await payment_store.webhook_seen(db, event["id"]):
        return False
    await _apply(db, engine, payments, event)
    await payment_store.mark_webhook_handled(db, event["id"], payments.provider)
    return True


async def _apply(
    db: AsyncEngine, engine: EngineClient, payments: Payments, event: dict[str, Any]
) -> None:
    kind = event.get("type", "")
    obj = event.get("data", {}).get("object", {})
    intent_id = obj.get("payment_intent") if kind.startswith("charge.") else obj.get("id")
    order_id = (obj.get("metadata") or {}).get("order_id")
    if not order_id and intent_id:  # charge events carry the intent, not our metadata
        order_id = await payment_store.order_of_intent(db, intent_id)
    order = await order_store.get_order(db, order_id) if order_id else None
    if order is None:
        log.info("stripe %s for no order of ours (%s)", kind, intent_id)
        return
    if kind == "payment_intent.succeeded":
        await payment_store.set_payment_status(db, intent_id, PaymentStatus.SUCCEEDED)
        await paid(db, engine, payments, order, intent_id)
    elif kind == "payment_intent.payment_failed":
        await payment_store.set_payment_status(db, intent_id, PaymentStatus.FAILED)
    elif kind == "payment_intent.canceled":
        await payment_store.set_payment_status(db, intent_id, PaymentStatus.CANCELED)
        if await payment_store.end_unpaid_order(
            db, order.id, OrderStatus.CANCELLED, "payment_canceled"
        ):
            await engine.release(order.event_id, order.hold_id)
    elif kind == "charge.refunded" and order.status is OrderStatus.PAID:
        await return_to_sale(engine, order)


async def paid(
    db: AsyncEngine, engine: EngineClient, payments: Payments, order: OrderRecord, intent_id: str
) -> None:
    """Money arrived: sell the hold; if it lapsed, sell the same seats if they
    are still free; if someone else has them, give the money back."""
    if order.status in (OrderStatus.PAID, OrderStatus.REFUNDED):
        return
    meta = {"amount_cents": order.amount_cents, "currency": order.currency, "payment": intent_id}
    try:
        await engine.confirm(order.event_id, order.hold_id, order.id, meta)
        return
    except (HoldExpired, HoldNotFound):
        pass
    places = Places.of(order.items)
    try:
        await engine.confirm(
            order.event_id,
            order.hold_id,
            order.id,
            meta,
            late=True,
            customer_id=order.customer_id,
            seats=places.seats,
            section=places.section,
            quantity=places.quantity,
        )
        log.info("order %s paid late; its seats were still free and are sold", order.id)
    except (SeatsUnavailable, SoldOut, EventNotOnSale) as exc:
        log.warning("order %s paid after its seats were resold (%s): refunding", order.id, exc.code)
        # PaymentsUnavailable propagates: Stripe redelivers the event and the
        # refund is tried again.
        await payments.refund(intent_id, reason_key="seats_resold")
        await payment_store.end_unpaid_order(db, order.id, OrderStatus.REFUNDED, "seats_resold")
