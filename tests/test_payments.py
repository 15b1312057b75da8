"""Payments end to end: the `stripe` library as a buyer's client would use it,
localstripe as Stripe (a real HTTP server sending signed webhooks), and
`onsale serve` + `onsale writer` on real Redis, Postgres and Ray."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import time
import uuid
from collections import Counter
from typing import Any

import asyncpg
import httpx
import pytest
import stripe
from sqlalchemy.ext.asyncio import AsyncEngine

from sales.testmode import EmbeddedStripe, pay_with_card
from tests.api_support import PASSWORD, unique_email
from tests.conftest import LiveApi
from tests.payment_support import (
    DECLINED_CARD,
    bearer,
    checkout,
    event_with_seats,
    pay,
    stripe_client,
    until_status,
)
from tests.sales import wait_for

pytestmark = pytest.mark.slow


async def order_status(
    api: LiveApi, http: httpx.AsyncClient, auth: dict[str, str], order_id: str
) -> dict[str, Any]:
    return dict((await http.get(f"/orders/{order_id}", headers=auth)).json())


async def pg_order(database_url: str, order_id: str) -> tuple[str, int]:
    conn = await asyncpg.connect(database_url)
    try:
        row = await conn.fetchrow(
            "SELECT o.status, (SELECT count(*) FROM tickets t"
            " WHERE t.order_id = o.id AND t.status = 'valid') FROM orders o WHERE o.id = $1",
            order_id,
        )
        return str(row[0]), int(row[1])
    finally:
        await conn.close()


async def seat_status(http: httpx.AsyncClient, event_id: str) -> dict[str, str]:
    return {
        s["id"]: s["status"] for s in (await http.get(f"/events/{event_id}/seats")).json()["seats"]
    }


async def test_pay_with_a_test_card_confirms_the_order_once_and_lists_its_tickets(
    live_api: LiveApi, db: AsyncEngine, database_url: str
) -> None:
    async with httpx.AsyncClient(base_url=live_api.base_url, timeout=30) as http:
        event_id = await event_with_seats(live_api, db, http)
        r = await http.post(
            "/auth/register", json={"email": unique_email(), "password": PASSWORD, "name": "Ada"}
        )
        auth = {"Authorization": f"Bearer {r.json()['access_token']}"}
        order = await checkout(http, auth, event_id, ["A-1-1", "A-1-2"])
        assert order["status"] == "pending_payment" and order["amount_cents"] == 10_000
        assert (
            await asyncio.to_thread(pay, live_api, order["payment"]["payment_intent_id"])
            == "succeeded"
        )
        paid = await until_status(http, auth, order["order_id"], "paid")
        assert sorted(t["seat"] for t in paid["tickets"]) == ["A-1-1", "A-1-2"]
        assert await pg_order(database_url, order["order_id"]) == ("paid", 2)
        assert (await seat_status(http, event_id))["A-1-1"] == "sold"


async def test_declined_card_leaves_the_order_unpaid_and_the_seats_held_until_the_hold_ends(
    live_api: LiveApi, db: AsyncEngine
) -> None:
    async with httpx.AsyncClient(base_url=live_api.base_url, timeout=30) as http:
        event_id = await event_with_seats(live_api, db, http, hold_ttl_s=30)
        auth = bearer(live_api, uuid.uuid4())
        order = await checkout(http, auth, event_id, ["A-1-3"])
        assert (
            await asyncio.to_thread(
                pay, live_api, order["payment"]["payment_intent_id"], DECLINED_CARD
            )
            == "declined"
        )
        assert (await order_status(live_api, http, auth, order["order_id"]))[
            "status"
        ] == "pending_payment"
        assert (await seat_status(http, event_id))["A-1-3"] == "held"

        async def freed() -> bool:
            return (await seat_status(http, event_id))["A-1-3"] == "available"

        await wait_for(freed, 40, "the unpaid hold to lapse")  # its 30 s: checkout kept them
        assert (await order_status(live_api, http, auth, order["order_id"]))["status"] == "expired"


def _signed(secret: str, payload: bytes, at: int | None = None) -> str:
    at = at or int(time.time())
    mac = hmac.new(secret.encode(), f"{at}.".encode() + payload, hashlib.sha256).hexdigest()
    return f"t={at},v1={mac}"


async def test_forged_or_stale_signatures_are_refused_and_a_redelivered_event_confirms_once(
    live_api: LiveApi, db: AsyncEngine, database_url: str
) -> None:
    async with httpx.AsyncClient(base_url=live_api.base_url, timeout=30) as http:
        event_id = await event_with_seats(live_api, db, http)
        auth = bearer(live_api, uuid.uuid4())
        order = await checkout(http, auth, event_id, ["A-1-4"])
        intent = order["payment"]["payment_intent_id"]
        intent_object = {
            "id": intent,
            "object": "payment_intent",
            "metadata": {"order_id": order["order_id"]},
        }
        event = {
            "id": f"evt_{uuid.uuid4().hex[:16]}",
            "object": "event",
            "type": "payment_intent.succeeded",
            "created": int(time.time()),
            "data": {"object": intent_object},
        }
        payload = json.dumps(event).encode()
        for signature in (
            _signed("whsec_not_the_secret", payload),  # forged
            _signed(live_api.webhook_secret, payload, at=int(time.time()) - 3600),  # stale
            None,
        ):
            headers = {
                "Content-Type": "application/json",
                **({"Stripe-Signature": signature} if signature else {}),
            }
            r = await http.post("/webhooks/stripe", content=payload, headers=headers)
            assert r.status_code == 400 and r.json()["code"] == "invalid_signature"
        assert (await seat_status(http, event_id))["A-1-4"] == "held"  # nothing was sold
        # The real payment, then the same event twice more (and once under a new id).
        assert await asyncio.to_thread(pay, live_api, intent) == "succeeded"
        await until_status(http, auth, order["order_id"], "paid")
        for event_id_sent in (event["id"], event["id"], f"evt_{uuid.uuid4().hex[:16]}"):
            again = json.dumps({**event, "id": event_id_sent}).encode()
            headers = {
                "Content-Type": "application/json",
                "Stripe-Signature": _signed(live_api.webhook_secret, again),
            }
            assert (
                await http.post("/webhooks/stripe", content=again, headers=headers)
            ).status_code == 200
        assert await pg_order(database_url, order["order_id"]) == ("paid", 1)
        tickets = (await order_status(live_api, http, auth, order["order_id"]))["tickets"]
        assert [t["seat"] for t in tickets] == ["A-1-4"]  # one sale, one ticket


async def test_a_released_checkout_cannot_be_paid_and_its_seat_goes_to_the_next_buyer(
    live_api: LiveApi, db: AsyncEngine, database_url: str
) -> None:
    """Releasing the hold cancels the order's PaymentIntent at Stripe: the
    buyer cannot pay it afterwards, and the seat is the next buyer's. (A
    payment after a hold *lapsed* is a late sale, refunded if the seats were
    resold: tests/test_sales_services.py, and the 200-buyer race below.)"""
    async with httpx.AsyncClient(base_url=live_api.base_url, timeout=30) as http:
        event_id = await event_with_seats(live_api, db, http)
        late, quick = bearer(live_api, uuid.uuid4()), bearer(live_api, uuid.uuid4())
        first = await checkout(http, late, event_id, ["A-1-5"])
        assert (await http.delete(f"/holds/{first['hold_id']}", headers=late)).status_code == 204
        second = await checkout(http, quick, event_id, ["A-1-5"])
        with pytest.raises(stripe.StripeError):
            await asyncio.to_thread(pay, live_api, first["payment"]["payment_intent_id"])
        cancelled = await until_status(http, late, first["order_id"], "cancelled")
        assert cancelled["status_reason"] == "released"
        assert (
            await asyncio.to_thread(pay, live_api, second["payment"]["payment_intent_id"])
            == "succeeded"
        )
        await until_status(http, quick, second["order_id"], "paid")
        assert await pg_order(database_url, first["order_id"]) == ("cancelled", 0)
        assert await pg_order(database_url, second["order_id"]) == ("paid", 1)
        intent = stripe_client(live_api).v1.payment_intents.retrieve(
            first["payment"]["payment_intent_id"]
        )
        assert intent.status == "canceled"


async def test_refund_returns_the_seats_to_sale_and_marks_the_order_refunded(
    live_api: LiveApi, db: AsyncEngine, database_url: str
) -> None:
    async with httpx.AsyncClient(base_url=live_api.base_url, timeout=30) as http:
        event_id = await event_with_seats(live_api, db, http)
        auth = bearer(live_api, uuid.uuid4())
        order = await checkout(http, auth, event_id, ["A-1-6"])
        refuse = await http.post(f"/orders/{order['order_id']}/refund", headers=auth)
        assert refuse.status_code == 409 and refuse.json()["code"] == "order_not_paid"
        assert (
            await asyncio.to_thread(pay, live_api, order["payment"]["payment_intent_id"])
            == "succeeded"
        )
        await until_status(http, auth, order["order_id"], "paid")
        other = await http.post(
            f"/orders/{order['order_id']}/refund", headers=bearer(live_api, uuid.uuid4())
        )
        assert other.status_code == 404
        r = await http.post(f"/orders/{order['order_id']}/refund", headers=auth)
        assert r.status_code == 202, r.text
        assert (await seat_status(http, event_id))["A-1-6"] == "available"
        await until_status(http, auth, order["order_id"], "refunded")
        assert await pg_order(database_url, order["order_id"]) == ("refunded", 0)


async def test_200_buyers_paying_for_100_seats_end_with_exactly_100_paid_orders(
    live_api: LiveApi, db: AsyncEngine, database_url: str
) -> None:
    async with httpx.AsyncClient(
        base_url=live_api.base_url, timeout=60, limits=httpx.Limits(max_connections=50)
    ) as http:
        # The first hundred let their holds lapse (the shortest hold there is;
        # a released checkout can no longer be paid at all), then pay late.
        event_id = await event_with_seats(live_api, db, http, rows=10, per_row=10, hold_ttl_s=30)
        seats = [f"A-{r}-{s}" for r in range(1, 11) for s in range(1, 11)]
        early = [bearer(live_api, uuid.uuid4()) for _ in seats]
        first = await asyncio.gather(
            *(checkout(http, a, event_id, [s]) for a, s in zip(early, seats, strict=True))
        )

        async def lapsed() -> bool:
            return set((await seat_status(http, event_id)).values()) == {"available"}

        await wait_for(lapsed, 60, "the first hundred holds to lapse")
        later = [bearer(live_api, uuid.uuid4()) for _ in seats]
        second = await asyncio.gather(
            *(checkout(http, a, event_id, [s]) for a, s in zip(later, seats, strict=True))
        )
        intents = [o["payment"]["payment_intent_id"] for o in first + second]
        results = await asyncio.gather(*(asyncio.to_thread(pay, live_api, i) for i in intents))
        assert Counter(results) == {"succeeded": 200}
        orders = [o["order_id"] for o in first + second]

        async def settled() -> bool:
            conn = await asyncpg.connect(database_url)
            try:
                rows = await conn.fetch("SELECT status FROM orders WHERE id = ANY($1)", orders)
            finally:
                await conn.close()
            statuses = Counter(r["status"] for r in rows)
            return statuses["paid"] + statuses["refunded"] == 200

        await wait_for(settled, 120, "every payment to settle")
        conn = await asyncpg.connect(database_url)
        try:
            statuses = Counter(
                r["status"]
                for r in await conn.fetch("SELECT status FROM orders WHERE id = ANY($1)", orders)
            )
            tickets = await conn.fetch(
                "SELECT seat_id FROM tickets WHERE event_id = $1 AND status = 'valid'", event_id
            )
        finally:
            await conn.close()
        assert statuses == {"paid": 100, "refunded": 100}
        assert sorted(t["seat_id"] for t in tickets) == sorted(seats)  # each seat sold once
        availability = (await http.get(f"/events/{event_id}/availability")).json()["sections"][0]
        assert (
            availability["sold"] == 100 and availability["held"] == 0
        )  # Redis agrees with Postgres


def test_embedded_stripe_lists_a_charges_refunds_from_its_index(
    localstripe: EmbeddedStripe,
) -> None:
    """The embedded localstripe finds a charge's refunds by charge, not by
    scanning its store (which slowed it run after run): partial refunds are
    listed newest first, summed, and the charge reads refunded once they
    reach its amount."""
    client = stripe.StripeClient("sk_test_onsale_refunds", base_addresses={"api": localstripe.url})
    intent = client.v1.payment_intents.create(params={"amount": 1000, "currency": "eur"})
    assert pay_with_card(client, intent.id) == "succeeded"
    other = client.v1.payment_intents.create(params={"amount": 700, "currency": "eur"})
    assert pay_with_card(client, other.id) == "succeeded"
    first = client.v1.refunds.create(params={"payment_intent": intent.id, "amount": 300})
    client.v1.refunds.create(params={"payment_intent": other.id, "amount": 700})
    second = client.v1.refunds.create(params={"payment_intent": intent.id, "amount": 200})
    charge = client.v1.payment_intents.retrieve(intent.id).latest_charge  # expanded here
    assert {r.id for r in charge.refunds.data} == {first.id, second.id}
    assert (charge.amount_refunded, charge.refunded) == (500, False)
    client.v1.refunds.create(params={"payment_intent": intent.id, "amount": 500})
    charge = client.v1.payment_intents.retrieve(intent.id).latest_charge
    assert (len(charge.refunds.data), charge.amount_refunded, charge.refunded) == (3, 1000, True)
