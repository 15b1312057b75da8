"""Tickets and the door, end to end: orders paid through localstripe, written
by the outbox writer, scanned at `onsale serve` on real Redis, Postgres and
Ray. A ticket admits once, and only its event's organizer (or an admin) may
scan it; nothing forged, foreign or refunded gets in."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import uuid
from collections import Counter
from typing import Any

import asyncpg
import httpx
import jwt
import pytest
import zxingcpp
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from PIL import Image
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.api_support import User, on_sale_event, register, user_with_role
from tests.conftest import LiveApi
from tests.payment_support import pay, until_status

pytestmark = pytest.mark.slow

SECTIONS = [
    {"kind": "seated", "code": "A", "name": "Stalls", "price_cents": 5000, "rows": 2,
     "seats_per_row": 10},
    {"kind": "general", "code": "FLOOR", "name": "Floor", "price_cents": 3000, "capacity": 50},
]  # fmt: skip


@pytest.fixture
async def http(live_api: LiveApi) -> Any:
    async with httpx.AsyncClient(base_url=live_api.base_url, timeout=30) as client:
        yield client


@pytest.fixture
async def organizer(db: AsyncEngine, http: httpx.AsyncClient) -> User:
    return await user_with_role(db, http, "organizer")


@pytest.fixture
async def event_id(http: httpx.AsyncClient, organizer: User) -> str:
    return str((await on_sale_event(http, organizer, SECTIONS, name="Door night"))["id"])


async def bought(
    api: LiveApi, http: httpx.AsyncClient, buyer: User, event_id: str, hold: dict[str, Any]
) -> dict[str, Any]:
    """A paid order for ``hold`` ({"seats": [...]} or {"section", "quantity"})."""
    placed = await http.post(f"/events/{event_id}/holds", json=hold, headers=buyer.auth)
    assert placed.status_code == 201, placed.text
    order = await http.post(
        "/orders", json={"hold_id": placed.json()["hold_id"]}, headers=buyer.auth
    )
    assert order.status_code == 201, order.text
    assert await asyncio.to_thread(pay, api, order.json()["payment"]["payment_intent_id"]) == (
        "succeeded"
    )
    return await until_status(http, buyer.auth, order.json()["order_id"], "paid")


async def tickets(http: httpx.AsyncClient, who: User, order_id: str) -> list[dict[str, Any]]:
    r = await http.get(f"/orders/{order_id}/tickets", headers=who.auth)
    assert r.status_code == 200, r.text
    return list(r.json()["items"])


async def scan(
    http: httpx.AsyncClient, who: User | None, event_id: str, token: str
) -> httpx.Response:
    return await http.post(
        f"/events/{event_id}/checkins",
        json={"token": token},
        headers=who.auth if who else {},
    )


async def stats(http: httpx.AsyncClient, who: User, event_id: str) -> dict[str, int]:
    r = await http.get(f"/events/{event_id}/checkins/stats", headers=who.auth)
    assert r.status_code == 200, r.text
    body = r.json()
    return {"sold": body["sold"], "checked_in": body["checked_in"]}


async def checkin_rows(database_url: str, event_id: str) -> int:
    conn = await asyncpg.connect(database_url)
    try:
        return int(
            await conn.fetchval("SELECT count(*) FROM checkins WHERE event_id = $1", event_id)
        )
    finally:
        await conn.close()


def flip(token: str, at: int) -> str:
    """The token with one character changed (still base64url)."""
    swapped = "B" if token[at] != "B" else "C"
    return token[:at] + swapped + token[at + 1 :]


async def test_a_paid_order_has_one_signed_ticket_per_seat_and_place_verifiable_offline(
    live_api: LiveApi, http: httpx.AsyncClient, event_id: str, organizer: User, db: AsyncEngine
) -> None:
    buyer = await register(http)
    seated = await bought(live_api, http, buyer, event_id, {"seats": ["A-1-1", "A-1-2"]})
    standing = await bought(live_api, http, buyer, event_id, {"section": "FLOOR", "quantity": 3})
    seats = await tickets(http, buyer, seated["order_id"])
    places = await tickets(http, buyer, standing["order_id"])
    assert sorted(t["seat"] for t in seats) == ["A-1-1", "A-1-2"]
    assert [t["section"] for t in places] == ["FLOOR"] * 3 and all(
        t["seat"] is None for t in places
    )
    assert all(t["status"] == "valid" and t["token"] for t in seats + places)
    assert len({t["id"] for t in seats + places}) == 5

    # A scanner holding only the published key verifies every token offline.
    key = (await http.get(f"/events/{event_id}/ticket-key")).json()
    public = jwt.PyJWK(key["jwk"])
    for ticket in seats + places:
        claims = jwt.decode(ticket["token"], public.key, algorithms=["EdDSA"])
        assert claims["tid"] == ticket["id"] and claims["eid"] == event_id
        assert claims.get("seat") == ticket["seat"] and claims["sec"] == ticket["section"]
        assert jwt.get_unverified_header(ticket["token"])["kid"] == key["key_id"]

    # The QR code carries exactly the token.
    ticket = seats[0]
    png = await http.get(f"/tickets/{ticket['id']}/qr.png", headers=buyer.auth)
    assert png.status_code == 200 and png.headers["content-type"] == "image/png"
    # QR codes only: a 1-D reader once saw a phantom barcode ("7707") in the image.
    decoded = zxingcpp.read_barcodes(
        Image.open(io.BytesIO(png.content)), formats=zxingcpp.BarcodeFormat.QRCode
    )
    assert [d.text for d in decoded] == [ticket["token"]]
    svg = await http.get(f"/tickets/{ticket['id']}/qr.svg", headers=buyer.auth)
    assert svg.status_code == 200 and svg.headers["content-type"].startswith("image/svg+xml")
    assert b"<svg" in svg.content

    # The organizer and admins see the tickets; another customer does not.
    admin = await user_with_role(db, http, "admin")
    for who in (organizer, admin):
        assert len(await tickets(http, who, seated["order_id"])) == 2
    stranger = await register(http)
    assert (
        await http.get(f"/orders/{seated['order_id']}/tickets", headers=stranger.auth)
    ).status_code == 404
    assert (
        await http.get(f"/tickets/{ticket['id']}/qr.png", headers=stranger.auth)
    ).status_code == 404


async def test_a_ticket_checks_in_once_and_a_second_scan_is_409_with_the_first_time(
    live_api: LiveApi, http: httpx.AsyncClient, event_id: str, organizer: User, db: AsyncEngine
) -> None:
    buyer = await register(http)
    order = await bought(live_api, http, buyer, event_id, {"seats": ["A-2-1", "A-2-2"]})
    first, second = await tickets(http, buyer, order["order_id"])
    assert await stats(http, organizer, event_id) == {"sold": 2, "checked_in": 0}

    admitted = await scan(http, organizer, event_id, first["token"])
    assert admitted.status_code == 200, admitted.text
    assert admitted.json()["ticket_id"] == first["id"] and admitted.json()["seat"] == first["seat"]
    again = await scan(http, organizer, event_id, first["token"])
    assert again.status_code == 409 and again.json()["code"] == "already_checked_in"
    assert again.json()["checked_in_at"] == admitted.json()["checked_in_at"]
    admin = await user_with_role(db, http, "admin")  # an admin may scan any event
    assert (await scan(http, admin, event_id, second["token"])).status_code == 200
    assert await stats(http, organizer, event_id) == {"sold": 2, "checked_in": 2}


async def test_forged_foreign_revoked_and_unauthorised_scans_are_refused_and_change_nothing(
    live_api: LiveApi,
    http: httpx.AsyncClient,
    event_id: str,
    organizer: User,
    db: AsyncEngine,
    database_url: str,
) -> None:
    buyer = await register(http)
    order = await bought(live_api, http, buyer, event_id, {"seats": ["A-1-5", "A-1-6"]})
    ticket, kept = await tickets(http, buyer, order["order_id"])
    token = ticket["token"]
    header, payload, _ = token.split(".")

    def refused(r: httpx.Response, status: int, code: str) -> None:
        assert r.status_code == status, r.text
        assert r.json()["code"] == code and r.headers["content-type"] == "application/problem+json"

    # One byte changed: in the claims, in the signature.
    refused(
        await scan(http, organizer, event_id, flip(token, len(header) + 5)), 400, "invalid_ticket"
    )
    refused(
        await scan(http, organizer, event_id, flip(token, len(token) - 10)), 400, "invalid_ticket"
    )
    # The same claims signed by a key that is not the event's.
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    forged = jwt.encode(claims, Ed25519PrivateKey.generate(), algorithm="EdDSA")
    refused(await scan(http, organizer, event_id, forged), 400, "invalid_ticket")
    # A genuine ticket of another event, scanned here by this event's organizer.
    other_event = str((await on_sale_event(http, organizer, SECTIONS, name="Other night"))["id"])
    elsewhere = await bought(live_api, http, buyer, other_event, {"seats": ["A-1-1"]})
    (foreign,) = await tickets(http, buyer, elsewhere["order_id"])
    refused(await scan(http, organizer, event_id, foreign["token"]), 400, "invalid_ticket")
    # Someone who is not the event's organizer or an admin.
    rival = await user_with_role(db, http, "organizer")
    refused(await scan(http, rival, event_id, token), 403, "forbidden")
    refused(await scan(http, buyer, event_id, token), 403, "forbidden")
    assert (await scan(http, None, event_id, token)).status_code == 401
    assert await checkin_rows(database_url, event_id) == 0

    # Refunded: its tickets are revoked.
    assert (
        await http.post(f"/orders/{order['order_id']}/refund", headers=buyer.auth)
    ).status_code == 202
    await until_status(http, buyer.auth, order["order_id"], "refunded")
    revoked = await tickets(http, buyer, order["order_id"])
    assert {t["status"] for t in revoked} == {"refunded"} and all(
        t["token"] is None for t in revoked
    )
    refused(await scan(http, organizer, event_id, token), 400, "invalid_ticket")
    refused(await scan(http, organizer, event_id, kept["token"]), 400, "invalid_ticket")
    refused(
        await http.get(f"/tickets/{ticket['id']}/qr.svg", headers=buyer.auth), 410, "ticket_revoked"
    )
    assert await checkin_rows(database_url, event_id) == 0
    assert await stats(http, organizer, event_id) == {"sold": 0, "checked_in": 0}


async def test_50_concurrent_scans_of_one_ticket_admit_it_exactly_once(
    live_api: LiveApi, http: httpx.AsyncClient, event_id: str, organizer: User, database_url: str
) -> None:
    buyer = await register(http)
    order = await bought(live_api, http, buyer, event_id, {"seats": ["A-2-9"]})
    (ticket,) = await tickets(http, buyer, order["order_id"])
    gates = [
        httpx.AsyncClient(
            base_url=live_api.base_url, timeout=30, limits=httpx.Limits(max_connections=1)
        )
        for _ in range(50)
    ]
    try:
        await asyncio.gather(*(g.get("/healthz") for g in gates))  # connected before the start
        start = asyncio.Event()

        async def gate(client: httpx.AsyncClient) -> httpx.Response:
            await start.wait()
            return await scan(client, organizer, event_id, ticket["token"])

        tasks = [asyncio.ensure_future(gate(g)) for g in gates]
        await asyncio.sleep(0)
        start.set()
        answers = await asyncio.gather(*tasks)
    finally:
        await asyncio.gather(*(g.aclose() for g in gates))
    assert Counter(a.status_code for a in answers) == {200: 1, 409: 49}
    assert {a.json()["code"] for a in answers if a.status_code == 409} == {"already_checked_in"}
    assert await checkin_rows(database_url, event_id) == 1


async def test_negative_control_a_read_then_insert_check_in_admits_one_ticket_many_times(
    database_url: str,
) -> None:
    """The same 50 gates racing a check that reads, then writes, with no unique
    row per ticket to stop it: more than one is let in."""
    table = f"naive_checkins_{uuid.uuid4().hex[:8]}"
    setup = await asyncpg.connect(database_url)
    await setup.execute(f"CREATE TABLE {table} (ticket_id uuid, checked_in_at timestamptz)")
    pool = await asyncpg.create_pool(database_url, min_size=20, max_size=20)
    ticket_id = uuid.uuid4()
    try:
        start = asyncio.Event()

        async def gate() -> bool:
            async with pool.acquire() as conn:
                await start.wait()
                async with conn.transaction():
                    seen = await conn.fetchval(
                        f"SELECT count(*) FROM {table} WHERE ticket_id = $1", ticket_id
                    )
                    if seen:
                        return False
                    await conn.execute(f"INSERT INTO {table} VALUES ($1, now())", ticket_id)
                    return True

        tasks = [asyncio.ensure_future(gate()) for _ in range(50)]
        await asyncio.sleep(0.2)  # every gate holds a connection, parked on the start
        start.set()
        admitted = sum(await asyncio.gather(*tasks))
    finally:
        await pool.close()
        await setup.execute(f"DROP TABLE {table}")
        await setup.close()
    assert admitted > 1, f"the naive check-in admitted {admitted}"
