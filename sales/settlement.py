"""Settling payments: what each Stripe event does to an order.

The success path touches only the engine and Redis: the order is found in its
hold's record (by the metadata Stripe echoes, or by its PaymentIntent id), the
sale is made by the event's actor, and everything reaches Postgres through
the outbox. A verified event is handled once: its id is kept in Redis for
longer than Stripe's retry window (and written behind with the sale), set
after it is handled, so a failure is retried by Stripe rather than forgotten.
Every step is idempotent by order id, so even a handled event delivered
twice at once sells nothing twice. Reconciliation (:mod:`sales.reconcile`)
settles through the same functions when a webhook never comes.

- ``payment_intent.succeeded``: the order is the one whose checkout recorded
  the PaymentIntent (never the metadata's word), and Stripe must have taken
  its amount in its currency; otherwise the payment is recorded, alerted
  (log and ``onsale_payment_mismatches_total``) and refunded. Then sell the
  hold to the order. If the hold lapsed,
  sell the same seats if they are still free (a late sale). If someone else
  has them, the event was cancelled meanwhile, or the sale would take the
  buyer past the event's per-customer limit, refund the payment (the order
  ends ``refunded``, reason ``seats_resold``, ``event_cancelled`` or
  ``customer_limit``):
  a payment that can no longer become a sale is never left taken.
- ``payment_intent.processing`` / ``requires_action``: a payment is under
  way; the hold, which checkout left at its own expiry, is kept until the
  payment window from checkout ends (once: the same instant however often).
- ``payment_intent.payment_failed``: noted; the buyer may try another card
  while the hold lasts, then it frees itself.
- ``payment_intent.canceled``: the order ends ``cancelled``, the hold is released.
- ``charge.refunded`` (a refund made in Stripe's dashboard): once the whole
  charge is refunded the seats go back on sale, as for a refund asked through
  onsale; a partial refund leaves the order paid and its tickets valid.
"""

from __future__ import annotations

import logging
from typing import Any

from prometheus_client import Counter
from sqlalchemy.ext.asyncio import AsyncEngine

from engine.client import EngineClient
from engine.errors import (
    AlreadyConfirmed,
    CustomerLimit,
    EventNotOnSale,
    HoldExpired,
    HoldNotFound,
    SeatsUnavailable,
    SoldOut,
)
from engine.redis_client import AsyncRedis
from persistence import payments as payment_store
from persistence.orders import OrderRecord
from sales import lookups
from sales.holds import EventLookup
from sales.items import Places
from sales.orders import current_order
from sales.payments import Payments, received
from sales.refunds import return_to_sale
from sales.vocabulary import OrderStatus, PaymentStatus

log = logging.getLogger(__name__)
# Stripe's word that a payment is under way: the hold is kept for it.
UNDER_WAY = frozenset({"payment_intent.processing", "payment_intent.requires_action"})
MISMATCHES = Counter(
    "onsale_payment_mismatches_total",
    "Succeeded payments that could not pay an order as they stood: a PaymentIntent "
    "onsale did not make naming one of its orders, or the wrong amount or currency",
    ["reason"],
)


def _alert(reason: str, what: str) -> None:
    """Recorded in the log and the metric an operator alerts on."""
    MISMATCHES.labels(reason).inc()
    log.error("payment mismatch (%s): %s", reason, what)


class Settlement:
    """What settling needs: the engine, Redis, the event lookup, Stripe, and
    Postgres only for orders older than the engine's memory of them."""

    def __init__(
        self,
        db: AsyncEngine,
        engine: EngineClient,
        events: EventLookup,
        redis: AsyncRedis,
        payments: Payments,
        *,
        payment_window_s: int = 900,
    ) -> None:
        self.db, self.engine, self.events, self.redis = db, engine, events, redis
        self.payments = payments
        self.payment_window_s = payment_window_s

    async def handle(self, event: dict[str, Any]) -> bool:
        """Applies a verified Stripe event; False if it was handled before."""
        if await lookups.already_handled(self.redis, event["id"]):
            return False
        await self._apply(event)
        await lookups.handled(self.redis, event["id"])
        return True

    async def _apply(self, event: dict[str, Any]) -> None:
        kind = event.get("type", "")
        obj = event.get("data", {}).get("object", {})
        intent_id = obj.get("payment_intent") if kind.startswith("charge.") else obj.get("id")
        order = await self.order_paid_by(intent_id)
        if order is None:
            named = (obj.get("metadata") or {}).get("order_id")
            if named and kind == "payment_intent.succeeded":  # not ours, yet it names our order
                _alert("unknown_intent", f"PaymentIntent {intent_id} names order {named}")
            else:
                log.info("stripe %s for no order of ours (%s)", kind, intent_id)
            return
        if kind == "payment_intent.succeeded":
            amount, currency = received(obj)
            await self.succeeded(order, intent_id, amount, currency, stripe_event=event["id"])
        elif kind in UNDER_WAY:
            await self.under_way(order)
        elif kind == "payment_intent.payment_failed":
            if order.status is OrderStatus.PENDING_PAYMENT:
                await self.engine.note_payment(
                    order.event_id, order.hold_id, order.id, PaymentStatus.FAILED
                )
        elif kind == "payment_intent.canceled":
            await self.cancelled(order, stripe_event=event["id"])
        elif kind == "charge.refunded" and order.status is OrderStatus.PAID:
            if obj.get("refunded"):  # the whole charge: the seats go back on sale
                await return_to_sale(self.engine, order)
            else:  # part of it (a goodwill gesture in the dashboard): the sale stands
                log.warning(
                    "order %s: %s of %s refunded in Stripe's dashboard; the order stays paid",
                    order.id,
                    obj.get("amount_refunded"),
                    obj.get("amount"),
                )

    async def order_paid_by(self, intent_id: str | None) -> OrderRecord | None:
        """The order whose checkout recorded this PaymentIntent (Redis, then
        Postgres for older ones). Never the metadata's word: anyone with the
        account's key can make a PaymentIntent that names any order."""
        if not intent_id:
            return None
        order_id = await lookups.order_of_intent(self.redis, intent_id)
        if order_id is None:  # an order older than the lookup: Postgres knows
            order_id = await payment_store.order_of_intent(self.db, intent_id)
        if not order_id:
            return None
        return await current_order(self.db, self.engine, self.events, order_id)

    async def succeeded(
        self,
        order: OrderRecord,
        intent_id: str,
        amount: int | None,
        currency: str | None,
        *,
        stripe_event: str = "",
    ) -> None:
        """A succeeded payment of the order's own PaymentIntent: sold if Stripe
        took the order's amount in its currency; otherwise recorded, alerted
        and refunded, and the order ends ``refunded`` (``payment_mismatch``)."""
        matches = (
            amount == order.amount_cents
            and (currency or "").lower() == (order.currency or "").lower()
        )
        if matches or order.status in (OrderStatus.PAID, OrderStatus.REFUNDED):
            await self.paid(order, intent_id, stripe_event=stripe_event)  # settled: a replay
            return
        _alert(
            "amount_mismatch",
            f"order {order.id} costs {order.amount_cents} {order.currency}; "
            f"PaymentIntent {intent_id} took {amount} {currency}",
        )
        if order.status is OrderStatus.PENDING_PAYMENT:
            await self._give_back(order, intent_id, "payment_mismatch", "amount", stripe_event)
        await lookups.settled(self.redis, order.id)

    async def paid(self, order: OrderRecord, intent_id: str, *, stripe_event: str = "") -> None:
        """Money arrived: sell the hold; if it lapsed, sell the same seats if
        they are still free; if someone else has them (or the event is
        cancelled), give the money back."""
        if order.status in (OrderStatus.PAID, OrderStatus.REFUNDED):
            await lookups.settled(self.redis, order.id)
            return
        meta = {
            "amount_cents": order.amount_cents,
            "currency": order.currency,
            "payment": intent_id,
            "stripe_event": stripe_event,
        }
        try:
            await self.engine.confirm(order.event_id, order.hold_id, order.id, meta)
        except (HoldExpired, HoldNotFound):
            await self._late(order, intent_id, meta, stripe_event)
        except EventNotOnSale as exc:  # a live hold, but its event was cancelled
            await self._give_back(order, intent_id, "event_cancelled", exc.code, stripe_event)
        await lookups.settled(self.redis, order.id)

    async def _late(
        self, order: OrderRecord, intent_id: str, meta: dict[str, Any], stripe_event: str
    ) -> None:
        places = Places.of(order.items)
        try:
            await self.engine.confirm(
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
        except (SeatsUnavailable, SoldOut, EventNotOnSale, CustomerLimit) as exc:
            reason = (
                "event_cancelled"
                if isinstance(exc, EventNotOnSale)
                else "customer_limit"
                if isinstance(exc, CustomerLimit)
                else "seats_resold"
            )
            await self._give_back(order, intent_id, reason, exc.code, stripe_event)

    async def _give_back(
        self, order: OrderRecord, intent_id: str, reason: str, why: str, stripe_event: str
    ) -> None:
        log.warning("order %s paid, but cannot be sold (%s): refunding", order.id, why)
        # PaymentsUnavailable propagates: Stripe redelivers (or the next
        # reconciliation comes back), and the refund is tried again.
        await self.payments.refund(intent_id, reason_key=reason)
        await self.engine.end_order(
            order.event_id,
            order.hold_id,
            order.id,
            OrderStatus.REFUNDED,
            reason,
            stripe_event=stripe_event,
        )

    async def under_way(self, order: OrderRecord) -> None:
        """Stripe is taking the payment (a bank's check, 3-D Secure): the hold
        is kept until the payment window from checkout ends, and no longer,
        however often Stripe says so. A hold that already lapsed is left to
        the late sale should the payment succeed."""
        if order.status is not OrderStatus.PENDING_PAYMENT:
            return
        until_ms = int(order.created_at.timestamp() * 1000) + self.payment_window_s * 1000
        try:
            await self.engine.extend(order.event_id, order.hold_id, order.customer_id, until_ms)
        except (HoldExpired, HoldNotFound):
            pass

    async def cancelled(self, order: OrderRecord, *, stripe_event: str = "") -> None:
        """The payment was cancelled: the order ends, its hold is let go."""
        if order.status is OrderStatus.PENDING_PAYMENT:
            try:
                await self.engine.end_order(
                    order.event_id,
                    order.hold_id,
                    order.id,
                    OrderStatus.CANCELLED,
                    "payment_canceled",
                    stripe_event=stripe_event,
                )
            except AlreadyConfirmed:
                pass  # sold meanwhile: the sale stands
        await lookups.settled(self.redis, order.id)
