"""Reconciliation: asking Stripe about every order still waiting for its money.

A webhook that never arrives (a network, an outage, a misconfigured endpoint)
must not leave a payment taken and its order pending. `onsale reconcile` (run
by `onsale up`, Compose and the Ray cluster config) looks, on a schedule, at
the orders still awaiting payment (``sales.lookups.AWAITING``, soonest window
first) and settles each exactly as its webhook would: paid (or paid late),
refunded because its seats were resold, or cancelled. Once an order's window
and a grace period have passed, its PaymentIntent is cancelled at Stripe, so
that it can never be paid unseen. Several reconcilers may run: each order is
claimed for a moment, and every step is idempotent by order id anyway.
"""

from __future__ import annotations

import asyncio
import logging
import time

from sales import lookups
from sales.orders import current_order, payment_intent_of
from sales.payments import PaymentsUnavailable
from sales.settlement import Settlement
from sales.vocabulary import OrderStatus

log = logging.getLogger(__name__)


class Reconciler:
    def __init__(
        self,
        settlement: Settlement,
        *,
        grace_s: float = 3600.0,
        batch: int = 200,
        claim_s: float = 30.0,
    ) -> None:
        """``claim_s``: how long an order is one reconciler's once taken, so
        also how often each waiting order is asked about at most (the
        supervisor passes the interval)."""
        self.settlement = settlement
        self.grace_s = grace_s
        self.batch = batch
        self.claim_s = claim_s

    async def run(self, interval_s: float, stop: asyncio.Event) -> None:
        """Reconciles every ``interval_s`` until ``stop`` is set."""
        while not stop.is_set():
            try:
                settled = await self.once()
                if settled:
                    log.info("reconciled %d orders with Stripe", settled)
            except Exception:  # Stripe or Redis away: the next round tries again
                log.exception("reconciliation round failed")
            try:
                await asyncio.wait_for(stop.wait(), interval_s)
            except TimeoutError:
                pass

    async def once(self) -> int:
        """One round; returns how many orders left the waiting list."""
        s = self.settlement
        now_ms = time.time() * 1000
        done = 0
        for order_id, window_ends_ms in await lookups.awaiting(s.redis, self.batch):
            if not await lookups.claim(s.redis, order_id, self.claim_s):
                continue  # another reconciler has it
            try:
                done += await self._one(order_id, now_ms > window_ends_ms + self.grace_s * 1000)
            except PaymentsUnavailable as exc:
                log.warning("order %s not reconciled now: %s", order_id, exc)
        return done

    async def _one(self, order_id: str, past_hope: bool) -> int:
        s = self.settlement
        order = await current_order(s.db, s.engine, s.events, order_id)
        intent_id = await payment_intent_of(s.db, s.engine, order) if order else None
        if order is None or order.status is not OrderStatus.PENDING_PAYMENT or not intent_id:
            await lookups.settled(s.redis, order_id)
            return 1
        intent = await s.payments.retrieve(intent_id)
        if intent.status not in ("succeeded", "canceled") and past_hope:
            intent = await s.payments.cancel(intent_id)
        if intent.status == "succeeded":
            await s.succeeded(order, intent_id, intent.amount_received, intent.currency)
        elif intent.status == "canceled":
            await s.cancelled(order)
        else:
            return 0  # still the buyer's to pay
        return 1
