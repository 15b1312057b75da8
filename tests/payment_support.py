"""Paying for orders as a buyer's client would: the `stripe` library against
localstripe, and `onsale serve` + `onsale writer` turning the order paid."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import httpx
import stripe
from sqlalchemy.ext.asyncio import AsyncEngine

from api.security import hash_password, issue_access_token
from persistence import accounts
from sales.testmode import DECLINED_CARD, GOOD_CARD, pay_with_card
from sales.vocabulary import Role
from tests.api_support import PASSWORD, unique_email
from tests.conftest import LiveApi
from tests.sales import wait_for

__all__ = ["DECLINED_CARD", "GOOD_CARD"]


def stripe_client(api: LiveApi) -> stripe.StripeClient:
    return stripe.StripeClient(api.stripe_key, base_addresses={"api": api.stripe_api_base})


def pay(api: LiveApi, intent_id: str, card: str = GOOD_CARD) -> str:
    """What a buyer's client does with the PaymentIntent: attach a card, confirm."""
    return pay_with_card(stripe_client(api), intent_id, card)


def bearer(api: LiveApi, user_id: uuid.UUID, role: Role = Role.CUSTOMER) -> dict[str, str]:
    return {"Authorization": f"Bearer {issue_access_token(api.jwt_secret, user_id, role, 3600)}"}


async def event_with_seats(
    api: LiveApi,
    db: AsyncEngine,
    http: httpx.AsyncClient,
    rows: int = 1,
    per_row: int = 10,
    hold_ttl_s: int = 600,
) -> str:
    organizer = await accounts.create_user(
        db, unique_email("organizer"), hash_password(PASSWORD), "O", Role.ORGANIZER
    )
    auth = bearer(api, organizer.id, Role.ORGANIZER)
    event = (await http.post("/events", headers=auth, json={
        "name": "Paid night", "venue": "Hall", "starts_at": "2027-06-01T20:00:00Z",
        "currency": "EUR", "hold_ttl_s": hold_ttl_s})).json()  # fmt: skip
    r = await http.post(f"/events/{event['id']}/sections", headers=auth, json={
        "kind": "seated", "code": "A", "name": "Stalls", "price_cents": 5000,
        "rows": rows, "seats_per_row": per_row})  # fmt: skip
    assert r.status_code == 201, r.text
    assert (await http.post(f"/events/{event['id']}/publish", headers=auth)).status_code == 200
    return str(event["id"])


async def checkout(
    http: httpx.AsyncClient, auth: dict[str, str], event_id: str, seats: list[str]
) -> dict[str, Any]:
    hold = await http.post(f"/events/{event_id}/holds", json={"seats": seats}, headers=auth)
    assert hold.status_code == 201, hold.text
    order = await http.post("/orders", json={"hold_id": hold.json()["hold_id"]}, headers=auth)
    assert order.status_code == 201, order.text
    body = order.json()
    assert (
        body["payment"]["payment_intent_id"].startswith("pi_") and body["payment"]["client_secret"]
    )
    return dict(body)


async def until_status(
    http: httpx.AsyncClient,
    auth: dict[str, str],
    order_id: str,
    status: str,
    deadline_s: float = 30,
) -> dict[str, Any]:
    seen: dict[str, Any] = {}

    async def reached() -> bool:
        nonlocal seen
        seen = dict((await http.get(f"/orders/{order_id}", headers=auth)).json())
        return seen.get("status") == status

    await wait_for(reached, deadline_s, f"order {order_id} to be {status}")
    return seen


async def paid_order(
    api: LiveApi, http: httpx.AsyncClient, auth: dict[str, str], event_id: str, seats: list[str]
) -> dict[str, Any]:
    """Holds ``seats``, checks out, pays with a test card; returns the order once paid."""
    order = await checkout(http, auth, event_id, seats)
    status = await asyncio.to_thread(pay, api, order["payment"]["payment_intent_id"])
    assert status == "succeeded", status
    return await until_status(http, auth, order["order_id"], "paid")
