"""Orders over HTTP against the real app: checking out a hold (once per hold
and per Idempotency-Key), who sees an order, and events that close or are
cancelled meanwhile."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

import httpx

from tests.api_http import (
    held,
    order,
    problem,
    seat_map,
    sql_rows,
)
from tests.api_support import (
    User,
)


async def test_order_retried_with_the_same_key_is_created_once(
    http: httpx.AsyncClient,
    buyer: User,
    event: dict[str, Any],
    database_url: str,
    written: Callable[[], Awaitable[int]],
) -> None:
    placed = await held(http, buyer, event["id"], seats=["A-1-1"])
    key = uuid.uuid4().hex
    first = await order(http, buyer, placed["hold_id"], key)
    assert first.status_code == 201, first.text
    second = await order(http, buyer, placed["hold_id"], key)
    assert second.status_code == 201, second.text
    assert second.headers["idempotent-replayed"] == "true"
    assert second.json()["order_id"] == first.json()["order_id"]
    other_hold = await held(http, buyer, event["id"], seats=["A-1-2"])
    problem(await order(http, buyer, other_hold["hold_id"], key), 422, "idempotency_key_reused")
    await written()
    rows = await sql_rows(
        database_url,
        "SELECT id FROM orders WHERE hold_id = ANY($1::text[])",
        [placed["hold_id"], other_hold["hold_id"]],
    )
    assert [r["id"] for r in rows] == [first.json()["order_id"]]


# ---------------------------------------------------------------- orders


async def test_order_for_a_hold_awaits_payment(
    http: httpx.AsyncClient,
    buyer: User,
    event: dict[str, Any],
    database_url: str,
    written: Callable[[], Awaitable[int]],
) -> None:
    placed = await held(http, buyer, event["id"], seats=["A-1-1", "A-1-2"])
    ga = await held(http, buyer, event["id"], section="FLOOR", quantity=3)
    r = await order(http, buyer, placed["hold_id"])
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["order_id"] and body["status"] == "pending_payment"
    assert (body["event_id"], body["hold_id"]) == (event["id"], placed["hold_id"])
    assert (body["amount_cents"], body["currency"]) == (9000, "EUR")
    # Checking out is not paying: the hold keeps its own expiry (no payment is
    # under way yet), and the order expires with it.
    kept = (await http.get(f"/holds/{placed['hold_id']}", headers=buyer.auth)).json()
    assert body["expires_at"] == kept["expires_at"] == placed["expires_at"]
    assert sorted(body["items"], key=lambda i: i["seat"]) == [
        {"seat": "A-1-1", "section": "A", "quantity": 1, "price_cents": 4500},
        {"seat": "A-1-2", "section": "A", "quantity": 1, "price_cents": 4500},
    ]
    r = await order(http, buyer, ga["hold_id"])
    assert r.status_code == 201, r.text
    assert r.json()["items"] == [
        {"seat": None, "section": "FLOOR", "quantity": 3, "price_cents": 3000}
    ]
    assert r.json()["amount_cents"] == 9000

    await written()
    rows = await sql_rows(
        database_url,
        "SELECT status, customer_id, hold_id, amount_cents, currency, event_id"
        " FROM orders WHERE id = $1",
        body["order_id"],
    )
    assert len(rows) == 1
    assert dict(rows[0]) == {
        "status": "pending_payment",
        "customer_id": uuid.UUID(buyer.id).hex,
        "hold_id": placed["hold_id"],
        "amount_cents": 9000,
        "currency": "EUR",
        "event_id": event["id"],
    }
    # the seats stay held for the order
    assert (await seat_map(http, event["id"], "A"))["A-1-1"] == "held"


async def test_second_order_for_the_same_hold_conflicts(
    http: httpx.AsyncClient,
    buyer: User,
    event: dict[str, Any],
    database_url: str,
    written: Callable[[], Awaitable[int]],
) -> None:
    placed = await held(http, buyer, event["id"], section="FLOOR", quantity=1)
    first = await order(http, buyer, placed["hold_id"])
    assert first.status_code == 201, first.text
    body = problem(await order(http, buyer, placed["hold_id"]), 409, "order_exists")
    assert body["order_id"] == first.json()["order_id"]
    await written()
    rows = await sql_rows(
        database_url, "SELECT id FROM orders WHERE hold_id = $1", placed["hold_id"]
    )
    assert [r["id"] for r in rows] == [first.json()["order_id"]]


async def test_order_for_someone_elses_hold_is_not_found(
    http: httpx.AsyncClient,
    buyer: User,
    other: User,
    event: dict[str, Any],
    database_url: str,
    written: Callable[[], Awaitable[int]],
) -> None:
    placed = await held(http, buyer, event["id"], seats=["A-1-1"])
    problem(await order(http, other, placed["hold_id"]), 404, "not_found")
    problem(await order(http, other, "hl_missing.ev_nothing"), 404, "not_found")
    await written()
    rows = await sql_rows(
        database_url, "SELECT id FROM orders WHERE hold_id = $1", placed["hold_id"]
    )
    assert rows == []
    r = await http.get("/orders", headers=other.auth)
    assert r.status_code == 200 and r.json()["items"] == []
    # the holder still can
    assert (await order(http, buyer, placed["hold_id"])).status_code == 201


async def test_order_for_a_released_hold_is_gone(
    http: httpx.AsyncClient,
    buyer: User,
    event: dict[str, Any],
    database_url: str,
    written: Callable[[], Awaitable[int]],
) -> None:
    placed = await held(http, buyer, event["id"], seats=["A-1-1"])
    r = await http.delete(f"/holds/{placed['hold_id']}", headers=buyer.auth)
    assert r.status_code == 204
    problem(await order(http, buyer, placed["hold_id"]), 410, "hold_expired")
    await written()
    rows = await sql_rows(
        database_url, "SELECT id FROM orders WHERE hold_id = $1", placed["hold_id"]
    )
    assert rows == []


async def test_orders_list_is_mine_newest_first(
    http: httpx.AsyncClient, buyer: User, other: User, event: dict[str, Any]
) -> None:
    ids = []
    for seat in ("A-1-1", "A-1-2", "A-1-3"):
        placed = await held(http, buyer, event["id"], seats=[seat])
        r = await order(http, buyer, placed["hold_id"])
        assert r.status_code == 201, r.text
        ids.append(r.json()["order_id"])
    theirs = await held(http, other, event["id"], seats=["A-2-1"])
    assert (await order(http, other, theirs["hold_id"])).status_code == 201
    r = await http.get("/orders", headers=buyer.auth)
    assert r.status_code == 200, r.text
    items = r.json()["items"]
    assert [o["order_id"] for o in items] == ids[::-1]
    assert all(o["status"] == "pending_payment" for o in items)
    created = [datetime.fromisoformat(o["created_at"]) for o in items]
    assert created == sorted(created, reverse=True)
    problem(await http.get("/orders"), 401, "invalid_token")


async def test_an_order_is_visible_to_buyer_event_organizer_and_admin_only(
    http: httpx.AsyncClient,
    buyer: User,
    other: User,
    organizer: User,
    rival: User,
    admin: User,
    event: dict[str, Any],
) -> None:
    placed = await held(http, buyer, event["id"], seats=["A-1-1"])
    created = (await order(http, buyer, placed["hold_id"])).json()
    url = f"/orders/{created['order_id']}"
    for who in (buyer, organizer, admin):
        r = await http.get(url, headers=who.auth)
        assert r.status_code == 200, r.text
        assert r.json()["order_id"] == created["order_id"]
        assert r.json()["status"] == "pending_payment"
    for who in (other, rival):
        problem(await http.get(url, headers=who.auth), 404, "not_found")
    problem(await http.get("/orders/or_doesnotexist", headers=buyer.auth), 404, "not_found")
    problem(await http.get(url), 401, "invalid_token")


async def test_no_order_for_a_hold_on_a_cancelled_event(
    http: httpx.AsyncClient,
    organizer: User,
    buyer: User,
    event: dict[str, Any],
    database_url: str,
    written: Callable[[], Awaitable[int]],
) -> None:
    """Cancelling stops new sales: a hold placed before may not be checked out."""
    placed = await held(http, buyer, event["id"], seats=["A-1-1"])
    r = await http.post(f"/events/{event['id']}/cancel", headers=organizer.auth)
    assert r.status_code == 200, r.text
    r = await order(http, buyer, placed["hold_id"])
    assert r.status_code == 409, r.text
    assert r.json()["code"] in ("event_ended", "event_not_on_sale"), r.json()
    await written()
    rows = await sql_rows(
        database_url, "SELECT id FROM orders WHERE hold_id = $1", placed["hold_id"]
    )
    assert rows == []


async def test_a_closed_event_still_sells_holds_placed_before(
    http: httpx.AsyncClient, organizer: User, buyer: User, event: dict[str, Any]
) -> None:
    placed = await held(http, buyer, event["id"], seats=["A-1-1"])
    r = await http.post(f"/events/{event['id']}/close", headers=organizer.auth)
    assert r.status_code == 200, r.text
    r = await order(http, buyer, placed["hold_id"])
    assert r.status_code == 201 and r.json()["status"] == "pending_payment", r.text
