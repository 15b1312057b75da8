"""Money against the people who try to cheat, end to end: `onsale serve` +
`onsale writer` on real Redis, Postgres and Ray, localstripe as Stripe. A
ticket is admitted or its order refunded, never both; one refund per order
reaches Stripe however many are asked at once; the buyer's refunds end when
the event starts; releasing checked-out holds cannot beat the limit."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import re
import time
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
import stripe
from sqlalchemy.ext.asyncio import AsyncEngine

from api.security import hash_password
from persistence import accounts
from sales.testmode import pay_with_card
from sales.vocabulary import Role
from tests.api_http import sql_rows
from tests.api_support import PASSWORD, unique_email
from tests.conftest import LiveApi
from tests.payment_support import bearer, checkout, paid_order, stripe_client, until_status
from tests.sales import wait_for
from tests.test_payments import pg_order

pytestmark = pytest.mark.slow


async def _event(
    api: LiveApi,
    db: AsyncEngine,
    http: httpx.AsyncClient,
    seats: int,
    starts_at: datetime,
    limit: int = 8,
) -> tuple[str, dict[str, str]]:
    """A published event of one row of ``seats``; its organizer's auth."""
    organizer = await accounts.create_user(
        db, unique_email("organizer"), hash_password(PASSWORD), "O", Role.ORGANIZER
    )
    auth = bearer(api, organizer.id, Role.ORGANIZER)
    created = await http.post("/events", headers=auth, json={
        "name": "Door night", "venue": "Hall", "starts_at": starts_at.isoformat(),
        "currency": "EUR", "max_tickets_per_customer": limit})  # fmt: skip
    assert created.status_code == 201, created.text
    event_id = str(created.json()["id"])
    r = await http.post(f"/events/{event_id}/sections", headers=auth, json={
        "kind": "seated", "code": "A", "name": "Stalls", "price_cents": 5000,
        "rows": 1, "seats_per_row": seats})  # fmt: skip
    assert r.status_code == 201, r.text
    assert (await http.post(f"/events/{event_id}/publish", headers=auth)).status_code == 200
    return event_id, auth


def _later() -> datetime:
    return datetime.now(UTC) + timedelta(days=30)


async def _ticket_tokens(http: httpx.AsyncClient, auth: dict[str, str], order_id: str) -> list[str]:
    r = await http.get(f"/orders/{order_id}/tickets", headers=auth)
    assert r.status_code == 200, r.text
    return [str(t["token"]) for t in r.json()["items"]]


def _stripe_refunds(api: LiveApi, intent_id: str) -> int:
    listed = stripe_client(api).v1.refunds.list(params={"payment_intent": intent_id})
    return len(listed.data)


async def test_an_admitted_ticket_blocks_the_refund_of_its_order(
    live_api: LiveApi, db: AsyncEngine, database_url: str
) -> None:
    """Finding 1: checked in at the door, then asked for the money back."""
    async with httpx.AsyncClient(base_url=live_api.base_url, timeout=30) as http:
        event_id, door = await _event(live_api, db, http, 4, _later())
        buyer = bearer(live_api, uuid.uuid4())
        order = await paid_order(live_api, http, buyer, event_id, ["A-1-1", "A-1-2"])
        first, _ = await _ticket_tokens(http, buyer, order["order_id"])
        scan = await http.post(f"/events/{event_id}/checkins", json={"token": first}, headers=door)
        assert scan.status_code == 200, scan.text

        for who in (buyer, door):  # the organizer may not refund an admitted order either
            r = await http.post(f"/orders/{order['order_id']}/refund", headers=who)
            assert (r.status_code, r.json()["code"]) == (409, "ticket_checked_in"), r.text

        intent = order["payment"]["payment_intent_id"]
        assert await asyncio.to_thread(_stripe_refunds, live_api, intent) == 0
        assert (await until_status(http, buyer, order["order_id"], "paid"))["status"] == "paid"
        assert await pg_order(database_url, order["order_id"]) == ("paid", 2)
        stats = await http.get(f"/events/{event_id}/checkins/stats", headers=door)
        assert stats.json()["checked_in"] == 1
        admin = bearer(live_api, uuid.uuid4(), Role.ADMIN)
        logged = await http.get(
            "/admin/audit", params={"action": "ticket.checked_in"}, headers=admin
        )
        assert [e["detail"]["event_id"] for e in logged.json()].count(event_id) == 1
        refunds = await http.get(
            "/admin/audit", params={"subject": order["order_id"]}, headers=admin
        )
        assert refunds.json() == []  # refused refunds refunded nothing
        seats = (await http.get(f"/events/{event_id}/seats")).json()["seats"]
        assert {s["id"]: s["status"] for s in seats}["A-1-1"] == "sold"


async def test_50_refunds_racing_50_scans_admit_or_refund_each_ticket_never_both(
    live_api: LiveApi, db: AsyncEngine, database_url: str
) -> None:
    """Findings 1 and 9: ten paid orders of one ticket; five refund requests
    and five scans of each, all at once. Each ticket ends admitted (its order
    paid, nothing refunded) or refunded (not admitted, one refund at Stripe)."""
    async with httpx.AsyncClient(
        base_url=live_api.base_url, timeout=60, limits=httpx.Limits(max_connections=100)
    ) as http:
        event_id, door = await _event(live_api, db, http, 10, _later())
        orders: list[tuple[dict[str, str], dict[str, Any], str]] = []
        for seat in range(1, 11):
            buyer = bearer(live_api, uuid.uuid4())
            order = await paid_order(live_api, http, buyer, event_id, [f"A-1-{seat}"])
            [token] = await _ticket_tokens(http, buyer, order["order_id"])
            orders.append((buyer, order, token))

        async def refund(buyer: dict[str, str], order_id: str) -> tuple[str, int, str]:
            r = await http.post(f"/orders/{order_id}/refund", headers=buyer)
            return order_id, r.status_code, r.json().get("code", "") if r.status_code >= 400 else ""

        async def scan(order_id: str, token: str) -> tuple[str, int, str]:
            r = await http.post(f"/events/{event_id}/checkins", json={"token": token}, headers=door)
            return order_id, r.status_code, r.json().get("code", "") if r.status_code >= 400 else ""

        races = [refund(b, o["order_id"]) for b, o, _ in orders for _ in range(5)]
        races += [scan(o["order_id"], t) for _, o, t in orders for _ in range(5)]
        answers = await asyncio.gather(*races)
        assert all(status < 500 for _, status, _ in answers), answers
        refunded = {o for o, status, _ in answers[:50] if status == 202}
        admitted = {o for o, status, _ in answers[50:] if status == 200}
        assert refunded.isdisjoint(admitted), refunded & admitted
        assert refunded | admitted == {o["order_id"] for _, o, _ in orders}
        assert Counter(o for o, status, _ in answers[50:] if status == 200) == dict.fromkeys(
            admitted, 1
        )  # each admitted once

        for buyer, order, _ in orders:
            order_id, intent = order["order_id"], order["payment"]["payment_intent_id"]
            at_stripe = await asyncio.to_thread(_stripe_refunds, live_api, intent)
            if order_id in refunded:
                assert at_stripe == 1, order_id
                await until_status(http, buyer, order_id, "refunded")
                assert await pg_order(database_url, order_id) == ("refunded", 0)
            else:
                assert at_stripe == 0, order_id
                assert await pg_order(database_url, order_id) == ("paid", 1)
        stats = await http.get(f"/events/{event_id}/checkins/stats", headers=door)
        assert stats.json() == {"event_id": event_id, "sold": len(admitted),
                                "checked_in": len(admitted)}  # fmt: skip


def test_negative_control_concurrent_refunds_without_the_claim_each_reach_stripe(
    live_api: LiveApi,
) -> None:
    """What the claim guards against: five refunds of one payment asked of
    (local)Stripe at once, each with its own key, are five refunds."""
    client = stripe_client(live_api)
    intent = client.v1.payment_intents.create(params={"amount": 5000, "currency": "eur"})
    assert pay_with_card(client, intent.id) == "succeeded"
    for n in range(5):
        client.v1.refunds.create(
            params={"payment_intent": intent.id, "amount": 1000},
            options={"idempotency_key": f"uncoordinated-{intent.id}-{n}"},
        )
    assert _stripe_refunds(live_api, intent.id) == 5


async def test_the_buyer_may_not_refund_once_the_event_has_started_the_organizer_may(
    live_api: LiveApi, db: AsyncEngine, database_url: str
) -> None:
    async with httpx.AsyncClient(base_url=live_api.base_url, timeout=30) as http:
        event_id, organizer = await _event(
            live_api, db, http, 2, datetime.now(UTC) - timedelta(minutes=5)
        )
        buyer = bearer(live_api, uuid.uuid4())
        order = await paid_order(live_api, http, buyer, event_id, ["A-1-1"])
        r = await http.post(f"/orders/{order['order_id']}/refund", headers=buyer)
        assert (r.status_code, r.json()["code"]) == (403, "refund_closed"), r.text
        intent = order["payment"]["payment_intent_id"]
        assert await asyncio.to_thread(_stripe_refunds, live_api, intent) == 0

        r = await http.post(f"/orders/{order['order_id']}/refund", headers=organizer)
        assert r.status_code == 202, r.text
        admin = bearer(live_api, uuid.uuid4(), Role.ADMIN)
        logged = await http.get(
            "/admin/audit", params={"subject": order["order_id"]}, headers=admin
        )
        [entry] = logged.json()
        assert (entry["action"], entry["actor_role"]) == ("order.refund", "organizer")
        await until_status(http, buyer, order["order_id"], "refunded")
        assert await pg_order(database_url, order["order_id"]) == ("refunded", 0)
        assert await asyncio.to_thread(_stripe_refunds, live_api, intent) == 1


def _try_to_pay(api: LiveApi, intent_id: str) -> str:
    try:
        return pay_with_card(stripe_client(api), intent_id)
    except stripe.StripeError as exc:
        return f"refused: {exc.user_message or exc}"


async def test_hold_checkout_release_three_times_then_paying_every_intent_beats_no_limit(
    live_api: LiveApi, db: AsyncEngine, database_url: str
) -> None:
    """Finding 4: a limit of 2; the buyer holds 2, checks out and releases,
    three times, then pays all three PaymentIntents. Each release cancelled
    its PaymentIntent at Stripe, so none can be paid; the buyer ends with the
    2 tickets of one honest purchase."""
    async with httpx.AsyncClient(base_url=live_api.base_url, timeout=30) as http:
        event_id, _ = await _event(live_api, db, http, 8, _later(), limit=2)
        buyer = bearer(live_api, uuid.uuid4())
        released: list[dict[str, Any]] = []
        for n in range(3):
            order = await checkout(http, buyer, event_id, [f"A-1-{2 * n + 1}", f"A-1-{2 * n + 2}"])
            gone = await http.delete(f"/holds/{order['hold_id']}", headers=buyer)
            assert gone.status_code == 204, gone.text
            released.append(order)
        for order in released:
            intent = order["payment"]["payment_intent_id"]
            assert (await asyncio.to_thread(_try_to_pay, live_api, intent)).startswith("refused")
            status = stripe_client(live_api).v1.payment_intents.retrieve(intent).status
            assert status == "canceled"
            seen = await until_status(http, buyer, order["order_id"], "cancelled")
            assert seen["tickets"] == []
        honest = await paid_order(live_api, http, buyer, event_id, ["A-1-7", "A-1-8"])
        assert len(honest["tickets"]) == 2
        over = await http.post(f"/events/{event_id}/holds", json={"seats": ["A-1-1"]},
                               headers=buyer)  # fmt: skip
        assert (over.status_code, over.json()["code"]) == (403, "customer_limit")
        valid = await sql_rows(
            database_url,
            "SELECT count(*) FROM tickets WHERE event_id = $1 AND status = 'valid'",
            event_id,
        )
        assert valid[0][0] == 2


def _signed_event(api: LiveApi, kind: str, obj: dict[str, Any]) -> tuple[bytes, dict[str, str]]:
    """A Stripe event as Stripe would send it, signed with the endpoint's secret."""
    payload = json.dumps({
        "id": f"evt_{uuid.uuid4().hex[:16]}", "object": "event", "type": kind,
        "created": int(time.time()), "data": {"object": obj},
    }).encode()  # fmt: skip
    at = int(time.time())
    mac = hmac.new(api.webhook_secret.encode(), f"{at}.".encode() + payload, hashlib.sha256)
    return payload, {
        "Content-Type": "application/json",
        "Stripe-Signature": f"t={at},v1={mac.hexdigest()}",
    }


async def _mismatches(http: httpx.AsyncClient, reason: str) -> float:
    text = (await http.get("/metrics")).text
    found = re.findall(rf'onsale_payment_mismatches_total{{reason="{reason}"}} ([0-9.e+]+)', text)
    return sum(float(v) for v in found)


async def test_a_foreign_payment_intent_naming_an_order_pays_nothing_through_the_webhook(
    live_api: LiveApi, db: AsyncEngine, database_url: str
) -> None:
    """Finding 5, through Stripe's webhook to `onsale serve`: a 50 JPY
    PaymentIntent made on the same account, its metadata naming a 100 EUR
    order, is paid; localstripe delivers the event; the order stays unpaid."""
    async with httpx.AsyncClient(base_url=live_api.base_url, timeout=30) as http:
        event_id, _ = await _event(live_api, db, http, 4, _later())
        buyer = bearer(live_api, uuid.uuid4())
        order = await checkout(http, buyer, event_id, ["A-1-1", "A-1-2"])
        assert order["amount_cents"] == 10_000
        before = await _mismatches(http, "unknown_intent")
        client = stripe_client(live_api)
        foreign = client.v1.payment_intents.create(params={
            "amount": 50, "currency": "jpy",
            "metadata": {"order_id": order["order_id"], "event_id": event_id}})  # fmt: skip
        assert await asyncio.to_thread(pay_with_card, client, foreign.id) == "succeeded"

        async def alerted() -> bool:
            return await _mismatches(http, "unknown_intent") > before

        await wait_for(alerted, 30, "the foreign payment's alert")
        seen = (await http.get(f"/orders/{order['order_id']}", headers=buyer)).json()
        assert (seen["status"], seen["tickets"]) == ("pending_payment", [])
        seats = (await http.get(f"/events/{event_id}/seats")).json()["seats"]
        assert {s["id"]: s["status"] for s in seats}["A-1-1"] == "held"
        rows = await sql_rows(database_url, "SELECT status FROM orders WHERE id = $1",
                              order["order_id"])  # fmt: skip
        assert [r[0] for r in rows] in ([], ["pending_payment"])  # never paid in Postgres
        # The buyer's own payment still pays it.
        assert (
            await asyncio.to_thread(pay_with_card, client, order["payment"]["payment_intent_id"])
            == "succeeded"
        )
        await until_status(http, buyer, order["order_id"], "paid")
        assert await pg_order(database_url, order["order_id"]) == ("paid", 2)


async def test_a_partial_dashboard_refund_through_the_webhook_leaves_the_order_paid(
    live_api: LiveApi, db: AsyncEngine, database_url: str
) -> None:
    """Finding 8, through `onsale serve`: ``charge.refunded`` for part of the
    charge changes nothing; for the rest, the order ends refunded."""
    async with httpx.AsyncClient(base_url=live_api.base_url, timeout=30) as http:
        event_id, _ = await _event(live_api, db, http, 4, _later())
        buyer = bearer(live_api, uuid.uuid4())
        order = await paid_order(live_api, http, buyer, event_id, ["A-1-1", "A-1-2"])
        intent = order["payment"]["payment_intent_id"]
        client = stripe_client(live_api)

        def dashboard_refund(amount: int) -> dict[str, Any]:
            client.v1.refunds.create(params={"payment_intent": intent, "amount": amount})
            return dict(client.v1.payment_intents.retrieve(intent).latest_charge.to_dict())

        charge = await asyncio.to_thread(dashboard_refund, 3000)
        assert charge["refunded"] is False
        payload, headers = _signed_event(live_api, "charge.refunded", charge)
        assert (
            await http.post("/webhooks/stripe", content=payload, headers=headers)
        ).status_code == 200
        seen = (await http.get(f"/orders/{order['order_id']}", headers=buyer)).json()
        assert seen["status"] == "paid" and len(seen["tickets"]) == 2
        assert await pg_order(database_url, order["order_id"]) == ("paid", 2)
        seats = (await http.get(f"/events/{event_id}/seats")).json()["seats"]
        assert {s["id"]: s["status"] for s in seats}["A-1-1"] == "sold"

        charge = await asyncio.to_thread(dashboard_refund, 7000)
        assert charge["refunded"] is True
        payload, headers = _signed_event(live_api, "charge.refunded", charge)
        assert (
            await http.post("/webhooks/stripe", content=payload, headers=headers)
        ).status_code == 200
        await until_status(http, buyer, order["order_id"], "refunded")
        assert await pg_order(database_url, order["order_id"]) == ("refunded", 0)
