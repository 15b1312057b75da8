"""Holds over HTTP against the real app: pricing and expiry, taken seats and
sold-out sections refused whole, per-customer limits, who may see and release
a hold, Idempotency-Key replays, and the per-user rate limit. Every refusal
is checked for its status, its problem+json ``code`` and for having changed
nothing."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from sales.vocabulary import Role
from tests.api_http import (
    ApiWith,
    counts,
    draft,
    fresh_stats,
    held,
    hold,
    problem,
    seat_map,
)
from tests.api_support import (
    SEATED,
    User,
    minted,
    on_sale_event,
)

# ---------------------------------------------------------------- holds


async def test_seat_hold_is_priced_and_expires_after_the_event_ttl(
    http: httpx.AsyncClient, organizer: User, buyer: User
) -> None:
    ev = await on_sale_event(http, organizer, hold_ttl_s=300, currency="GBP")
    before = datetime.now(UTC)
    r = await hold(http, buyer, ev["id"], seats=["A-1-1", "A-3-4"])
    after = datetime.now(UTC)
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["hold_id"] and body["event_id"] == ev["id"]
    assert body["status"] == "held"
    assert sorted(body["seats"]) == ["A-1-1", "A-3-4"] and body["section"] is None
    assert (body["amount_cents"], body["currency"], body["quantity"]) == (9000, "GBP", 2)
    expires = datetime.fromisoformat(body["expires_at"])
    assert before + timedelta(seconds=299) <= expires <= after + timedelta(seconds=301)
    seats = await seat_map(http, ev["id"], "A")
    assert seats["A-1-1"] == seats["A-3-4"] == "held" and seats["A-1-2"] == "available"
    r = await http.get(f"/holds/{body['hold_id']}", headers=buyer.auth)
    assert r.status_code == 200 and r.json() == body, r.text


async def test_general_admission_hold_by_section_and_quantity(
    http: httpx.AsyncClient, buyer: User, event: dict[str, Any]
) -> None:
    body = await held(http, buyer, event["id"], section="FLOOR", quantity=3)
    assert (body["section"], body["quantity"], body["seats"]) == ("FLOOR", 3, None)
    assert (body["amount_cents"], body["currency"]) == (9000, "EUR")
    assert (await counts(http, event["id"]))["FLOOR"] == {
        "capacity": 20,
        "available": 17,
        "held": 3,
        "sold": 0,
    }


async def test_taken_seat_is_refused_and_nothing_of_the_request_is_held(
    http: httpx.AsyncClient, buyer: User, other: User, event: dict[str, Any]
) -> None:
    await held(http, other, event["id"], seats=["A-1-2"])
    r = await hold(http, buyer, event["id"], seats=["A-1-1", "A-1-2", "A-1-3"])
    assert problem(r, 409, "seats_unavailable")["unavailable"] == ["A-1-2"]
    seats = await seat_map(http, event["id"], "A")
    assert (seats["A-1-1"], seats["A-1-2"], seats["A-1-3"]) == ("available", "held", "available")
    assert (await counts(http, event["id"]))["A"]["held"] == 1


async def test_more_than_general_capacity_is_sold_out(
    http: httpx.AsyncClient, buyer: User, other: User, organizer: User
) -> None:
    # No per-customer limit (asked for): capacity alone refuses here.
    event = await on_sale_event(
        http, organizer, max_tickets_per_customer=0, max_held_per_customer=0
    )
    problem(await hold(http, buyer, event["id"], section="FLOOR", quantity=21), 409, "sold_out")
    assert await counts(http, event["id"]) == fresh_stats()
    await held(http, other, event["id"], section="FLOOR", quantity=15)
    body = problem(
        await hold(http, buyer, event["id"], section="FLOOR", quantity=6), 409, "sold_out"
    )
    assert (body["section"], body["available"]) == ("FLOOR", 5)
    assert (await counts(http, event["id"]))["FLOOR"]["held"] == 15
    await held(http, buyer, event["id"], section="FLOOR", quantity=5)  # exactly what is left
    assert (await counts(http, event["id"]))["FLOOR"]["available"] == 0


async def test_seat_of_an_unknown_section_or_outside_the_map_is_unknown_seat(
    http: httpx.AsyncClient, buyer: User, untouched_event: dict[str, Any]
) -> None:
    for seats in (["Z-1-1"], ["A-1-1", "FLOOR-1-1"], ["A-4-1"], ["A-1-5"]):
        r = await hold(http, buyer, untouched_event["id"], seats=seats)
        problem(r, 422, "unknown_seat")
    assert await counts(http, untouched_event["id"]) == fresh_stats()


async def test_general_hold_on_a_seated_section_is_the_wrong_kind(
    http: httpx.AsyncClient, buyer: User, untouched_event: dict[str, Any]
) -> None:
    problem(
        await hold(http, buyer, untouched_event["id"], section="A", quantity=2),
        422,
        "wrong_section_kind",
    )
    problem(
        await hold(http, buyer, untouched_event["id"], section="NOPE", quantity=2),
        422,
        "unknown_section",
    )
    assert await counts(http, untouched_event["id"]) == fresh_stats()


@pytest.mark.parametrize(
    "body",
    [
        {"seats": ["A-1-1"], "section": "FLOOR", "quantity": 1},
        {"seats": ["A-1-1"], "section": "FLOOR"},
        {},
        {"section": "FLOOR"},
        {"section": "FLOOR", "quantity": 0},
        {"seats": []},
        {"seats": ["A-1-1"], "quantity": 1},
        {"seats": ["A-1-1"], "note": "extra"},
    ],
    ids=[
        "both",
        "seats-and-section",
        "empty",
        "no-quantity",
        "quantity-0",
        "no-seats",
        "seats-and-quantity",
        "extra-field",
    ],
)
async def test_malformed_hold_bodies_are_validation_errors(
    http: httpx.AsyncClient, buyer: User, untouched_event: dict[str, Any], body: dict[str, Any]
) -> None:
    r = await hold(http, buyer, untouched_event["id"], **body)
    assert problem(r, 422, "validation_error")["errors"]
    assert await counts(http, untouched_event["id"]) == fresh_stats()


async def test_tickets_per_customer_are_limited(
    http: httpx.AsyncClient, organizer: User, buyer: User, other: User
) -> None:
    ev = await on_sale_event(http, organizer, max_tickets_per_customer=2)
    first = await held(http, buyer, ev["id"], seats=["A-1-1"])
    await held(http, buyer, ev["id"], section="FLOOR", quantity=1)
    body = problem(await hold(http, buyer, ev["id"], seats=["A-1-2"]), 403, "customer_limit")
    assert body["limit"] == 2
    problem(await hold(http, buyer, ev["id"], section="FLOOR", quantity=1), 403, "customer_limit")
    assert await counts(http, ev["id"]) == {
        "A": {"capacity": 12, "available": 11, "held": 1, "sold": 0},
        "FLOOR": {"capacity": 20, "available": 19, "held": 1, "sold": 0},
    }
    # A limit of someone else's: another customer still gets two at once.
    await held(http, other, ev["id"], seats=["A-1-2", "A-1-3"])
    problem(await hold(http, other, ev["id"], seats=["A-1-4"]), 403, "customer_limit")
    # releasing a hold gives its tickets back to the allowance
    r = await http.delete(f"/holds/{first['hold_id']}", headers=buyer.auth)
    assert r.status_code == 204, r.text
    await held(http, buyer, ev["id"], seats=["A-1-4"])
    problem(await hold(http, buyer, ev["id"], seats=["A-2-1"]), 403, "customer_limit")


async def test_organizers_and_admins_cannot_hold(
    http: httpx.AsyncClient, organizer: User, admin: User, untouched_event: dict[str, Any]
) -> None:
    for who in (organizer, admin):
        problem(await hold(http, who, untouched_event["id"], seats=["A-1-1"]), 403, "forbidden")
    problem(
        await http.post(f"/events/{untouched_event['id']}/holds", json={"seats": ["A-1-1"]}),
        401,
        "invalid_token",
    )
    assert await counts(http, untouched_event["id"]) == fresh_stats()


async def test_hold_on_a_closed_event_is_refused(
    http: httpx.AsyncClient, organizer: User, buyer: User, event: dict[str, Any]
) -> None:
    await held(http, buyer, event["id"], seats=["A-1-1"])  # warm every cache first
    r = await http.post(f"/events/{event['id']}/close", headers=organizer.auth)
    assert r.status_code == 200, r.text
    problem(await hold(http, buyer, event["id"], seats=["A-1-2"]), 409, "event_not_on_sale")
    seats = await seat_map(http, event["id"], "A")
    assert seats["A-1-2"] == "available" and seats["A-1-1"] == "held"


async def test_hold_on_an_unknown_or_draft_event_is_not_found(
    http: httpx.AsyncClient, organizer: User, buyer: User
) -> None:
    problem(await hold(http, buyer, "ev_0000000000000000", seats=["A-1-1"]), 404, "not_found")
    created = await draft(http, organizer)
    await http.post(f"/events/{created['id']}/sections", json=SEATED, headers=organizer.auth)
    problem(await hold(http, buyer, created["id"], seats=["A-1-1"]), 404, "not_found")


async def test_a_hold_is_visible_to_its_holder_only(
    http: httpx.AsyncClient, buyer: User, other: User, organizer: User, event: dict[str, Any]
) -> None:
    placed = await held(http, buyer, event["id"], seats=["A-2-2"])
    url = f"/holds/{placed['hold_id']}"
    problem(await http.get(url, headers=other.auth), 404, "not_found")
    problem(await http.get(url, headers=organizer.auth), 404, "not_found")
    problem(await http.get(url), 401, "invalid_token")
    problem(await http.get("/holds/garbage", headers=buyer.auth), 404, "not_found")
    problem(await http.get(f"/holds/hl_nope.{event['id']}", headers=buyer.auth), 404, "not_found")
    r = await http.get(url, headers=buyer.auth)
    assert r.status_code == 200 and r.json() == placed, r.text


async def test_another_customer_cannot_release_a_hold(
    http: httpx.AsyncClient, buyer: User, other: User, event: dict[str, Any]
) -> None:
    placed = await held(http, buyer, event["id"], seats=["A-2-2"])
    problem(await http.delete(f"/holds/{placed['hold_id']}", headers=other.auth), 404, "not_found")
    assert (await seat_map(http, event["id"], "A"))["A-2-2"] == "held"
    r = await http.get(f"/holds/{placed['hold_id']}", headers=buyer.auth)
    assert r.status_code == 200 and r.json()["status"] == "held"
    problem(await hold(http, other, event["id"], seats=["A-2-2"]), 409, "seats_unavailable")


async def test_holder_releases_and_the_seats_are_free_at_once(
    http: httpx.AsyncClient, buyer: User, other: User, event: dict[str, Any]
) -> None:
    seated = await held(http, buyer, event["id"], seats=["A-3-1", "A-3-2"])
    ga = await held(http, buyer, event["id"], section="FLOOR", quantity=4)
    for placed in (seated, ga):
        r = await http.delete(f"/holds/{placed['hold_id']}", headers=buyer.auth)
        assert r.status_code == 204 and r.content == b"", r.text
    assert await counts(http, event["id"]) == fresh_stats()
    seats = await seat_map(http, event["id"], "A")
    assert seats["A-3-1"] == seats["A-3-2"] == "available"
    r = await http.get(f"/holds/{seated['hold_id']}", headers=buyer.auth)
    problem(r, 410, "hold_expired")
    # releasing twice is fine, and someone else can have the seats right away
    r = await http.delete(f"/holds/{seated['hold_id']}", headers=buyer.auth)
    assert r.status_code == 204, r.text
    await held(http, other, event["id"], seats=["A-3-1", "A-3-2"])


# ---------------------------------------------------------------- Idempotency-Key


async def test_hold_retried_with_the_same_key_is_held_once(
    http: httpx.AsyncClient, buyer: User, event: dict[str, Any]
) -> None:
    key = uuid.uuid4().hex
    first = await hold(http, buyer, event["id"], key, seats=["A-1-1", "A-1-2"])
    assert first.status_code == 201, first.text
    assert "idempotent-replayed" not in first.headers
    second = await hold(http, buyer, event["id"], key, seats=["A-1-1", "A-1-2"])
    assert second.status_code == 201, second.text
    assert second.headers["idempotent-replayed"] == "true"
    assert second.json() == first.json()
    assert (await counts(http, event["id"]))["A"]["held"] == 2

    ga_key = uuid.uuid4().hex
    ga = [
        await hold(http, buyer, event["id"], ga_key, section="FLOOR", quantity=2) for _ in range(3)
    ]
    assert [r.status_code for r in ga] == [201, 201, 201]
    assert len({r.json()["hold_id"] for r in ga}) == 1
    assert (await counts(http, event["id"]))["FLOOR"]["held"] == 2


async def test_same_key_with_a_different_body_is_refused(
    http: httpx.AsyncClient, buyer: User, event: dict[str, Any]
) -> None:
    key = uuid.uuid4().hex
    first = await hold(http, buyer, event["id"], key, seats=["A-1-1"])
    assert first.status_code == 201, first.text
    r = await hold(http, buyer, event["id"], key, seats=["A-1-2"])
    problem(r, 422, "idempotency_key_reused")
    r = await hold(http, buyer, event["id"], key, section="FLOOR", quantity=1)
    problem(r, 422, "idempotency_key_reused")
    assert await counts(http, event["id"]) == {
        "A": {"capacity": 12, "available": 11, "held": 1, "sold": 0},
        "FLOOR": {"capacity": 20, "available": 20, "held": 0, "sold": 0},
    }


async def test_a_refused_hold_is_replayed_as_the_same_refusal(
    http: httpx.AsyncClient, buyer: User, other: User, event: dict[str, Any]
) -> None:
    blocker = await held(http, other, event["id"], seats=["A-1-1"])
    key = uuid.uuid4().hex
    first = await hold(http, buyer, event["id"], key, seats=["A-1-1"])
    refused = problem(first, 409, "seats_unavailable")
    r = await http.delete(f"/holds/{blocker['hold_id']}", headers=other.auth)
    assert r.status_code == 204
    # the seat is free now, but the retry gets the first answer, not a hold
    again = await hold(http, buyer, event["id"], key, seats=["A-1-1"])
    assert problem(again, 409, "seats_unavailable") == refused
    assert again.headers["idempotent-replayed"] == "true"
    assert (await seat_map(http, event["id"], "A"))["A-1-1"] == "available"


async def test_the_same_key_from_different_users_is_independent(
    http: httpx.AsyncClient, buyer: User, other: User, event: dict[str, Any]
) -> None:
    key = uuid.uuid4().hex
    mine = await hold(http, buyer, event["id"], key, section="FLOOR", quantity=2)
    theirs = await hold(http, other, event["id"], key, section="FLOOR", quantity=2)
    assert mine.status_code == theirs.status_code == 201, (mine.text, theirs.text)
    assert "idempotent-replayed" not in theirs.headers
    assert mine.json()["hold_id"] != theirs.json()["hold_id"]
    assert (await counts(http, event["id"]))["FLOOR"]["held"] == 4
    r = await http.get(f"/holds/{theirs.json()['hold_id']}", headers=other.auth)
    assert r.status_code == 200, r.text


async def test_overlong_idempotency_key_is_a_validation_error(
    http: httpx.AsyncClient, buyer: User, untouched_event: dict[str, Any]
) -> None:
    r = await hold(http, buyer, untouched_event["id"], "k" * 256, seats=["A-1-1"])
    problem(r, 422, "validation_error")
    assert await counts(http, untouched_event["id"]) == fresh_stats()


# ---------------------------------------------------------------- rate limit


async def test_holds_are_rate_limited_per_user(api_with: ApiWith, db: AsyncEngine) -> None:
    async with api_with(rate_limits="holds=3/minute,global=10000/minute") as api:
        client = api.http
        organizer = await minted(db, api, Role.ORGANIZER)
        ev = await on_sale_event(client, organizer)
        greedy = await minted(db, api)
        patient = await minted(db, api)
        for _ in range(3):
            await held(client, greedy, ev["id"], section="FLOOR", quantity=1)
        r = await hold(client, greedy, ev["id"], section="FLOOR", quantity=1)
        body = problem(r, 429, "rate_limited")
        assert 1 <= int(r.headers["retry-after"]) <= 60
        assert body["retry_after_s"] == int(r.headers["retry-after"])
        assert (await counts(client, ev["id"]))["FLOOR"]["held"] == 3
        await held(client, patient, ev["id"], section="FLOOR", quantity=1)
        assert (await counts(client, ev["id"]))["FLOOR"]["held"] == 4
