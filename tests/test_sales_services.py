"""The sale's services, called as the API calls them, on real parts: Redis
and a Ray actor per event (the engine), Postgres (orders, the outbox writer),
and localstripe (PaymentIntents, refunds, and the events Stripe would send).

Each money path ends with API-independent agreement: what Stripe says, what
the engine sold and what Postgres recorded.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import redis as redis_sync
from sqlalchemy.ext.asyncio import AsyncEngine

from engine.client import EngineClient
from engine.redis_client import redis_client
from persistence import accounts
from persistence import orders as order_store
from persistence.events import EventDraft, EventRecord, SectionSpec, get_event
from persistence.rebuild import PostgresRestore
from persistence.writer import OutboxWriter
from sales import catalog, checkin, holds, lookups, refunds, tickets
from sales.access import Principal
from sales.checkout import Checkout, checkout
from sales.errors import SaleRefused
from sales.orders import order_for
from sales.payments import Payments
from sales.reconcile import Reconciler
from sales.settlement import MISMATCHES, Settlement
from sales.testmode import EmbeddedStripe, pay_with_card, sandbox_key, stripe_client
from sales.ticketing import TicketSigner
from sales.vocabulary import (
    EventStatus,
    HoldStatus,
    OrderStatus,
    Role,
    SectionKind,
    TicketStatus,
)
from tests.api_support import password_hash, unique_email
from tests.sales import wait_for

STALLS = SectionSpec("A", "Stalls", 5000, SectionKind.SEATED, rows=2, seats_per_row=5)


class Events:
    """The services' event lookup, straight from Postgres (the API caches it)."""

    def __init__(self, db: AsyncEngine) -> None:
        self.db = db

    async def get(self, event_id: str) -> EventRecord | None:
        return await get_event(self.db, event_id)


class Sale:
    """Everything a sale needs, on a Redis database of its own (so the writer
    meets no outbox of the engine tests' events, which have no rows here)."""

    def __init__(
        self, db: AsyncEngine, engine: EngineClient, payments: Payments, stripe: Any, redis: Any
    ) -> None:
        self.db, self.engine, self.payments, self.stripe = db, engine, payments, stripe
        self.redis = redis
        self.events = Events(db)
        self.settlement = Settlement(db, engine, self.events, redis, payments)
        self.writer = OutboxWriter(redis, db)
        self.signer = TicketSigner.from_settings(None, Path(f"/tmp/onsale-signer-{uuid.uuid4()}"))

    async def event(self, hold_ttl_s: int = 600, max_per_customer: int = 8) -> EventRecord:
        starts_at = datetime.now(UTC) + timedelta(days=30)
        draft = EventDraft("Service night", "Hall", starts_at, "EUR", hold_ttl_s=hold_ttl_s,
                           max_tickets_per_customer=max_per_customer)  # fmt: skip
        created = await catalog.create_event(self.db, None, draft, [STALLS])
        return await catalog.put_on_sale(self.db, self.engine, created.id)

    async def checkout(self, event: EventRecord, buyer: Principal, seats: list[str]) -> Checkout:
        hold_id = holds.new_hold_id(event.id, buyer, None)
        await holds.place(self.engine, event, buyer, hold_id, seats=seats)
        return await checkout(
            self.engine,
            self.events,
            self.redis,
            self.payments,
            hold_id=hold_id,
            user=buyer,
            payment_window_s=0,  # reconciliation gives an unpaid one up when its hold ends
        )

    async def pay(self, intent_id: str) -> dict[str, Any]:
        """Pays with a test card; returns the event localstripe recorded for it."""
        status = await asyncio.to_thread(pay_with_card, self.stripe, intent_id)
        assert status == "succeeded", status

        def find() -> Any:
            listed = self.stripe.v1.events.list(
                params={"type": "payment_intent.succeeded", "limit": 100}
            )
            return [e for e in listed.auto_paging_iter() if e.data.object["id"] == intent_id]

        [event] = await asyncio.to_thread(find)
        return dict(event.to_dict())

    async def tickets(self, order_id: str, user: Principal) -> Any:
        return await tickets.tickets_of_order(
            self.db, self.engine, self.events, self.signer, order_id, user
        )

    async def refund(self, order_id: str, user: Principal) -> Any:
        return await refunds.refund_order(
            self.db, self.engine, self.events, self.payments, order_id, user
        )

    async def check_in(self, event_id: str, token: str, user: Principal) -> Any:
        return await checkin.check_in(
            self.db, self.engine, self.events, self.signer, event_id, token, user
        )

    async def refunded_at_stripe(self, intent_id: str) -> bool:
        """The payment's charge, as Stripe has it now, is refunded in full."""
        intent = await asyncio.to_thread(self.stripe.v1.payment_intents.retrieve, intent_id)
        charge = intent.latest_charge  # an id from Stripe; localstripe expands it
        if isinstance(charge, str):
            charge = await asyncio.to_thread(self.stripe.v1.charges.retrieve, charge)
        return intent.status == "succeeded" and bool(charge and charge.refunded)

    async def seats(self, event_id: str) -> dict[str, str]:
        return (await self.engine.snapshot(event_id)).seats

    async def recorded(self, order_id: str) -> order_store.OrderRecord:
        await self.writer.drain()
        order = await order_store.get_order(self.db, order_id)
        assert order is not None
        return order


def customer() -> Principal:
    return Principal(uuid.uuid4(), Role.CUSTOMER)


@pytest.fixture(scope="module")
def sale_redis_url(redis_url: str) -> Iterator[str]:
    url = str(urlsplit(redis_url)._replace(path="/3").geturl())
    redis_sync.Redis.from_url(url).flushdb()
    yield url


@pytest.fixture(scope="module")
async def sale(
    sale_redis_url: str,
    database_url: str,
    ray_local: str,
    db: AsyncEngine,
    localstripe: EmbeddedStripe,
) -> AsyncIterator[Sale]:
    key = sandbox_key()
    engine = EngineClient(
        sale_redis_url, sweep_interval_s=0.2, restore=PostgresRestore(database_url)
    )
    redis = redis_client(sale_redis_url)
    try:
        yield Sale(
            db,
            engine,
            Payments(key, "whsec_unused", localstripe.url),
            stripe_client(key, localstripe.url),
            redis,
        )
    finally:
        await engine.aclose()
        await redis.aclose()


async def test_a_paid_order_is_sold_once_recorded_ticketed_and_refunded(sale: Sale) -> None:
    event = await sale.event()
    buyer = customer()
    done = await sale.checkout(event, buyer, ["A-1-1", "A-1-2"])
    assert done.order.status is OrderStatus.PENDING_PAYMENT and done.order.amount_cents == 10_000
    assert done.intent is not None
    stripe_event = await sale.pay(done.intent.id)

    assert await sale.settlement.handle(stripe_event)
    # Redelivered: recognised, nothing sold twice.
    assert not await sale.settlement.handle(stripe_event)
    assert await sale.seats(event.id) == {"A-1-1": "sold", "A-1-2": "sold"}
    paid = await sale.recorded(done.order.id)
    assert paid.status is OrderStatus.PAID
    assert sorted(t.seat_id or "" for t in paid.tickets) == ["A-1-1", "A-1-2"]

    order, issued = await sale.tickets(paid.id, buyer)
    for each in issued:
        assert each.token is not None
        assert sale.signer.verify(each.token, event.id).ticket_id == str(each.ticket.id)

    refund = await sale.refund(order.id, buyer)
    assert refund.provider_status == "succeeded"
    assert await sale.seats(event.id) == {}  # back on sale at once
    refunded = await sale.recorded(order.id)
    assert refunded.status is OrderStatus.REFUNDED
    assert {t.status for t in refunded.tickets} == {TicketStatus.REFUNDED}
    assert await sale.refunded_at_stripe(done.intent.id)  # Stripe agrees: the money went back


async def _lapsed(sale: Sale, event_id: str, hold_id: str) -> None:
    async def expired() -> bool:
        view = await sale.engine.hold(event_id, hold_id)
        return view is not None and view.status is HoldStatus.EXPIRED

    await wait_for(expired, 15, "the hold to lapse")


async def test_a_payment_after_the_hold_lapsed_buys_the_same_seats_if_still_free(
    sale: Sale,
) -> None:
    event = await sale.event(hold_ttl_s=1)
    buyer = customer()
    done = await sale.checkout(event, buyer, ["A-2-1"])
    assert done.intent is not None
    await _lapsed(sale, event.id, done.order.hold_id)
    stripe_event = await sale.pay(done.intent.id)
    await sale.settlement.handle(stripe_event)
    assert await sale.seats(event.id) == {"A-2-1": "sold"}
    assert (await sale.recorded(done.order.id)).status is OrderStatus.PAID


async def test_a_payment_for_seats_resold_meanwhile_is_refunded_and_sells_nothing(
    sale: Sale,
) -> None:
    event = await sale.event(hold_ttl_s=1)
    late, quick = customer(), customer()
    done = await sale.checkout(event, late, ["A-2-2"])
    assert done.intent is not None
    await _lapsed(sale, event.id, done.order.hold_id)
    # The quick buyer's hold is kept for 10 minutes (not the event's 1 s), so
    # it is still live however long the payment below takes at Stripe.
    await sale.engine.hold_seats(event.id, quick.customer_id, ["A-2-2"], ttl_s=600,
                                 hold_id=holds.new_hold_id(event.id, quick, None))  # fmt: skip
    stripe_event = await sale.pay(done.intent.id)
    await sale.settlement.handle(stripe_event)
    assert await sale.seats(event.id) == {"A-2-2": "held"}  # still the quick buyer's
    order = await sale.recorded(done.order.id)
    assert (order.status, order.status_reason) == (OrderStatus.REFUNDED, "seats_resold")
    assert order.tickets == ()
    assert await sale.refunded_at_stripe(done.intent.id)


async def test_check_in_admits_a_ticket_once_and_only_for_the_events_managers(
    sale: Sale,
) -> None:
    event = await sale.event()
    admin = await accounts.create_user(
        sale.db, unique_email("door"), password_hash(), "D", Role.ADMIN
    )
    buyer, door = customer(), Principal(admin.id, admin.role)
    done = await sale.checkout(event, buyer, ["A-1-5"])
    assert done.intent is not None
    stripe_event = await sale.pay(done.intent.id)
    await sale.settlement.handle(stripe_event)
    await sale.recorded(done.order.id)
    _, [issued] = await sale.tickets(done.order.id, buyer)
    assert issued.token is not None

    with pytest.raises(SaleRefused) as refused:
        await sale.check_in(event.id, issued.token, buyer)
    assert refused.value.code == "forbidden"
    admitted = await sale.check_in(event.id, issued.token, door)
    assert (admitted.ticket_id, admitted.seat) == (issued.ticket.id, "A-1-5")
    with pytest.raises(SaleRefused) as again:
        await sale.check_in(event.id, issued.token, door)
    assert again.value.code == "already_checked_in"
    assert again.value.context["checked_in_at"].startswith(str(admitted.checked_in_at.year))
    tally = await checkin.tally(sale.db, event.id, door)
    assert (tally.sold, tally.checked_in) == (1, 1)


async def test_someone_elses_order_hold_and_ticket_do_not_exist_for_a_customer(
    sale: Sale,
) -> None:
    event = await sale.event()
    buyer, stranger = customer(), customer()
    done = await sale.checkout(event, buyer, ["A-1-3"])
    for attempt in (
        order_for(sale.db, sale.engine, sale.events, done.order.id, stranger),
        holds.own_hold(sale.events, sale.engine, done.order.hold_id, stranger),
        holds.release(sale.events, sale.engine, done.order.hold_id, stranger),
        sale.refund(done.order.id, stranger),
    ):
        with pytest.raises(SaleRefused) as refused:
            await attempt
        assert refused.value.code == "not_found"
    assert await sale.seats(event.id) == {"A-1-3": "held"}  # nothing released


async def test_a_payment_on_a_hold_whose_event_was_cancelled_is_refunded_once(
    sale: Sale,
) -> None:
    """Today's answer used to be 409 on every redelivery, with the buyer
    charged for ever: the payment can no longer become a sale, so it is
    refunded and the order ends; a redelivered event changes nothing."""
    event = await sale.event()
    buyer = customer()
    done = await sale.checkout(event, buyer, ["A-2-3"])
    assert done.intent is not None
    admin = Principal(uuid.uuid4(), Role.ADMIN)
    await catalog.end_sale(sale.db, sale.engine, event.id, EventStatus.CANCELLED, admin)
    stripe_event = await sale.pay(done.intent.id)
    assert await sale.settlement.handle(stripe_event)  # settled, not an error
    assert not await sale.settlement.handle(stripe_event)  # a redelivery: already handled
    order = await sale.recorded(done.order.id)
    assert (order.status, order.status_reason) == (OrderStatus.REFUNDED, "event_cancelled")
    assert order.tickets == ()
    assert await sale.refunded_at_stripe(done.intent.id)
    assert "A-2-3" not in {s for s, st in (await sale.seats(event.id)).items() if st == "sold"}


async def test_reconcilers_settle_a_lost_webhook_once_and_cancel_what_was_never_paid(
    sale: Sale,
) -> None:
    """No webhook is handled here: two reconcilers at once ask Stripe. The
    paid order is sold once and recorded paid; the order whose window and
    grace have passed unpaid has its PaymentIntent cancelled at Stripe, so it
    can never be paid unseen, and its seat is free again."""
    event = await sale.event(hold_ttl_s=1)
    payer, dawdler = customer(), customer()
    paid = await sale.checkout(event, payer, ["A-1-1"])
    unpaid = await sale.checkout(event, dawdler, ["A-1-2"])
    assert paid.intent is not None and unpaid.intent is not None
    await sale.pay(paid.intent.id)  # the webhook never comes
    await _lapsed(sale, event.id, unpaid.order.hold_id)

    first, second = (Reconciler(sale.settlement, grace_s=0, claim_s=5) for _ in range(2))
    await asyncio.gather(first.once(), second.once())

    assert await sale.seats(event.id) == {"A-1-1": "sold"}
    recorded = await sale.recorded(paid.order.id)
    assert recorded.status is OrderStatus.PAID and len(recorded.tickets) == 1
    gone = await sale.recorded(unpaid.order.id)
    assert gone.status in (OrderStatus.CANCELLED, OrderStatus.EXPIRED), gone.status
    intent = await asyncio.to_thread(sale.stripe.v1.payment_intents.retrieve, unpaid.intent.id)
    assert intent.status == "canceled"
    waiting = {order_id for order_id, _ in await lookups.awaiting(sale.redis, 10_000)}
    assert {paid.order.id, unpaid.order.id}.isdisjoint(waiting)  # nobody's to reconcile


def _mismatches(reason: str) -> float:
    return float(MISMATCHES.labels(reason)._value.get())


async def test_a_payment_intent_onsale_did_not_make_pays_no_order_even_if_it_names_one(
    sale: Sale,
) -> None:
    """Another integration on the same Stripe account (or anyone with its key)
    pays 50 JPY on a PaymentIntent whose metadata names a 100 EUR order of
    ours: recorded and alerted, and the order is not paid. The payment is not
    onsale's, so it is not onsale's to refund."""
    event = await sale.event()
    buyer = customer()
    done = await sale.checkout(event, buyer, ["A-1-4", "A-1-5"])
    alerts = _mismatches("unknown_intent")
    foreign = await asyncio.to_thread(
        sale.stripe.v1.payment_intents.create,
        params={
            "amount": 50,
            "currency": "jpy",
            "metadata": {"order_id": done.order.id, "event_id": event.id},
        },
    )
    stripe_event = await sale.pay(foreign.id)
    assert await sale.settlement.handle(stripe_event)
    assert _mismatches("unknown_intent") == alerts + 1
    assert await sale.seats(event.id) == {"A-1-4": "held", "A-1-5": "held"}
    seen = await order_for(sale.db, sale.engine, sale.events, done.order.id, buyer)
    assert seen.status is OrderStatus.PENDING_PAYMENT
    recorded = await sale.recorded(done.order.id)
    assert (recorded.status, recorded.tickets) == (OrderStatus.PENDING_PAYMENT, ())


async def test_a_payment_of_the_wrong_amount_is_alerted_refunded_and_sells_nothing(
    sale: Sale,
) -> None:
    """The order's own PaymentIntent, its amount lowered at Stripe before it
    was paid: the money is given back and the order ends refunded."""
    event = await sale.event()
    buyer = customer()
    done = await sale.checkout(event, buyer, ["A-2-4"])
    assert done.intent is not None and done.order.amount_cents == 5000
    await asyncio.to_thread(
        sale.stripe.v1.payment_intents.update, done.intent.id, params={"amount": 100}
    )
    alerts = _mismatches("amount_mismatch")
    stripe_event = await sale.pay(done.intent.id)
    assert await sale.settlement.handle(stripe_event)
    assert _mismatches("amount_mismatch") == alerts + 1
    order = await sale.recorded(done.order.id)
    assert (order.status, order.status_reason) == (OrderStatus.REFUNDED, "payment_mismatch")
    assert order.tickets == ()
    assert await sale.refunded_at_stripe(done.intent.id)
    assert (await sale.seats(event.id)).get("A-2-4") != "sold"


async def _dashboard_refund(sale: Sale, intent_id: str, amount: int) -> dict[str, Any]:
    """A refund made in Stripe's dashboard, and the ``charge.refunded`` event
    Stripe sends for it (localstripe refunds, but sends no such event: it is
    built here from the charge as localstripe has it after the refund)."""

    def refund() -> dict[str, Any]:
        sale.stripe.v1.refunds.create(params={"payment_intent": intent_id, "amount": amount})
        charge = sale.stripe.v1.payment_intents.retrieve(intent_id).latest_charge
        return dict(charge.to_dict())

    charge = await asyncio.to_thread(refund)
    return {"id": f"evt_{uuid.uuid4().hex}", "type": "charge.refunded", "data": {"object": charge}}


async def test_a_partial_dashboard_refund_leaves_the_order_paid_and_a_full_one_ends_it(
    sale: Sale,
) -> None:
    event = await sale.event()
    buyer = customer()
    done = await sale.checkout(event, buyer, ["A-2-5", "A-1-3"])
    assert done.intent is not None and done.order.amount_cents == 10_000
    assert await sale.settlement.handle(await sale.pay(done.intent.id))
    assert (await sale.recorded(done.order.id)).status is OrderStatus.PAID

    partial = await _dashboard_refund(sale, done.intent.id, 3000)
    assert partial["data"]["object"]["refunded"] is False
    assert await sale.settlement.handle(partial)
    assert await sale.seats(event.id) == {"A-2-5": "sold", "A-1-3": "sold"}
    kept = await sale.recorded(done.order.id)
    assert kept.status is OrderStatus.PAID
    assert {t.status for t in kept.tickets} == {TicketStatus.VALID} and len(kept.tickets) == 2

    rest = await _dashboard_refund(sale, done.intent.id, 7000)
    assert rest["data"]["object"]["refunded"] is True
    assert await sale.settlement.handle(rest)
    assert await sale.seats(event.id) == {}
    ended = await sale.recorded(done.order.id)
    assert ended.status is OrderStatus.REFUNDED
    assert {t.status for t in ended.tickets} == {TicketStatus.REFUNDED}
    assert await sale.refunded_at_stripe(done.intent.id)


async def test_a_late_payment_past_the_per_customer_limit_is_refunded_and_sells_nothing(
    sale: Sale,
) -> None:
    """A limit of 2: the buyer lets a checkout of 2 lapse, buys 2 more, then
    pays the lapsed one. The late sale would make 4: refunded instead."""
    event = await sale.event(hold_ttl_s=1, max_per_customer=2)
    buyer = customer()
    lapsed = await sale.checkout(event, buyer, ["A-1-1", "A-1-2"])
    assert lapsed.intent is not None
    await _lapsed(sale, event.id, lapsed.order.hold_id)
    bought = await sale.checkout(event, buyer, ["A-2-1", "A-2-2"])
    assert bought.intent is not None
    assert await sale.settlement.handle(await sale.pay(bought.intent.id))
    assert await sale.settlement.handle(await sale.pay(lapsed.intent.id))

    late = await sale.recorded(lapsed.order.id)
    assert (late.status, late.status_reason, late.tickets) == (
        OrderStatus.REFUNDED, "customer_limit", ()
    )  # fmt: skip
    assert await sale.refunded_at_stripe(lapsed.intent.id)
    kept = await sale.recorded(bought.order.id)
    assert kept.status is OrderStatus.PAID and len(kept.tickets) == 2
    sold = {s for s, st in (await sale.seats(event.id)).items() if st == "sold"}
    assert sold == {"A-2-1", "A-2-2"}


async def test_releasing_a_checked_out_hold_cancels_its_order_and_payment_intent(
    sale: Sale,
) -> None:
    event = await sale.event()
    buyer = customer()
    done = await sale.checkout(event, buyer, ["A-1-3"])
    assert done.intent is not None
    await holds.release(sale.events, sale.engine, done.order.hold_id, buyer, sale.payments)
    intent = await asyncio.to_thread(sale.stripe.v1.payment_intents.retrieve, done.intent.id)
    assert intent.status == "canceled"
    order = await order_for(sale.db, sale.engine, sale.events, done.order.id, buyer)
    assert (order.status, order.status_reason) == (OrderStatus.CANCELLED, "released")
    assert await sale.seats(event.id) == {}
    assert (await sale.recorded(done.order.id)).status is OrderStatus.CANCELLED


async def test_a_hold_is_kept_for_the_payment_window_only_once_a_payment_is_under_way(
    sale: Sale,
) -> None:
    """Checking out leaves the hold's expiry alone; Stripe's word that the
    payment is under way keeps it until the window from checkout ends, once."""
    event = await sale.event(hold_ttl_s=60)
    buyer = customer()
    done = await sale.checkout(event, buyer, ["A-1-5"])
    assert done.intent is not None
    hold = await sale.engine.hold(event.id, done.order.hold_id)
    assert hold is not None
    placed_until = hold.expires_at_ms
    assert done.order.expires_at is not None
    assert int(done.order.expires_at.timestamp() * 1000) == placed_until  # not extended
    assert placed_until <= (datetime.now(UTC) + timedelta(seconds=61)).timestamp() * 1000

    processing = {
        "id": f"evt_{uuid.uuid4().hex}",
        "type": "payment_intent.processing",
        "data": {"object": {"id": done.intent.id, "object": "payment_intent"}},
    }
    window_ends = int(done.order.created_at.timestamp() * 1000) + 900_000
    for _ in range(2):  # said twice (or redelivered): the same instant
        await sale.settlement.handle({**processing, "id": f"evt_{uuid.uuid4().hex}"})
        kept = await sale.engine.hold(event.id, done.order.hold_id)
        assert kept is not None and kept.expires_at_ms == window_ends
