"""Events, seat maps, holds and orders over HTTP, against the real app (real
Redis, Postgres and Ray): every refusal is checked for its status, its
problem+json ``code`` and for having changed nothing."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.api_support import (
    GENERAL,
    SEATED,
    User,
    on_sale_event,
    register,
    running_app,
    user_with_role,
)

EVENT = {
    "name": "Night Concert",
    "venue": "Hall",
    "starts_at": "2027-06-01T20:00:00Z",
    "currency": "EUR",
}


# ---------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
async def http(
    redis_url: str,
    database_url: str,
    ray_local: str,
    db: AsyncEngine,
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[httpx.AsyncClient]:
    async with running_app(redis_url, database_url, tmp_path_factory.mktemp("sales")) as (_, c):
        yield c


@pytest.fixture
async def organizer(db: AsyncEngine, http: httpx.AsyncClient) -> User:
    return await user_with_role(db, http, "organizer")


@pytest.fixture
async def rival(db: AsyncEngine, http: httpx.AsyncClient) -> User:
    """Another organizer."""
    return await user_with_role(db, http, "organizer")


@pytest.fixture
async def admin(db: AsyncEngine, http: httpx.AsyncClient) -> User:
    return await user_with_role(db, http, "admin")


@pytest.fixture
async def buyer(http: httpx.AsyncClient) -> User:
    return await register(http, "buyer")


@pytest.fixture
async def other(http: httpx.AsyncClient) -> User:
    return await register(http, "other")


@pytest.fixture
async def event(http: httpx.AsyncClient, organizer: User) -> dict[str, Any]:
    """On sale: A (seated, 3 x 4, 4500) and FLOOR (general, 20, 3000)."""
    return await on_sale_event(http, organizer)


# ---------------------------------------------------------------- helpers


def problem(r: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/problem+json"), r.headers
    body = r.json()
    assert body["code"] == code, body
    assert body["status"] == status
    assert body["type"] and body["title"] and body["detail"]
    return dict(body)


async def draft(http: httpx.AsyncClient, owner: User, **fields: Any) -> dict[str, Any]:
    r = await http.post("/events", json={**EVENT, **fields}, headers=owner.auth)
    assert r.status_code == 201, r.text
    return dict(r.json())


async def read_event(http: httpx.AsyncClient, event_id: str, who: User) -> dict[str, Any]:
    r = await http.get(f"/events/{event_id}", headers=who.auth)
    assert r.status_code == 200, r.text
    return dict(r.json())


async def counts(http: httpx.AsyncClient, event_id: str) -> dict[str, dict[str, int]]:
    r = await http.get(f"/events/{event_id}/availability")
    assert r.status_code == 200, r.text
    return {
        s["code"]: {k: s[k] for k in ("capacity", "available", "held", "sold")}
        for s in r.json()["sections"]
    }


async def seat_map(
    http: httpx.AsyncClient, event_id: str, section: str | None = None
) -> dict[str, str]:
    params = {"section": section} if section else None
    r = await http.get(f"/events/{event_id}/seats", params=params)
    assert r.status_code == 200, r.text
    return {s["id"]: s["status"] for s in r.json()["seats"]}


async def hold(
    http: httpx.AsyncClient, who: User, event_id: str, key: str | None = None, **body: Any
) -> httpx.Response:
    headers = dict(who.auth)
    if key is not None:
        headers["Idempotency-Key"] = key
    return await http.post(f"/events/{event_id}/holds", json=body, headers=headers)


async def held(http: httpx.AsyncClient, who: User, event_id: str, **body: Any) -> dict[str, Any]:
    r = await hold(http, who, event_id, **body)
    assert r.status_code == 201, r.text
    return dict(r.json())


async def order(
    http: httpx.AsyncClient, who: User, hold_id: str, key: str | None = None
) -> httpx.Response:
    headers = dict(who.auth)
    if key is not None:
        headers["Idempotency-Key"] = key
    return await http.post("/orders", json={"hold_id": hold_id}, headers=headers)


async def sql_rows(database_url: str, query: str, *args: Any) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(database_url)
    try:
        return list(await conn.fetch(query, *args))
    finally:
        await conn.close()


def fresh_stats() -> dict[str, dict[str, int]]:
    return {
        "A": {"capacity": 12, "available": 12, "held": 0, "sold": 0},
        "FLOOR": {"capacity": 20, "available": 20, "held": 0, "sold": 0},
    }


# ---------------------------------------------------------------- events


async def test_organizer_creates_a_draft_event_it_owns(
    http: httpx.AsyncClient, organizer: User
) -> None:
    r = await http.post(
        "/events",
        json={**EVENT, "description": "Loud", "hold_ttl_s": 120, "max_tickets_per_customer": 4},
        headers=organizer.auth,
    )
    assert r.status_code == 201, r.text
    created = r.json()
    assert created["status"] == "draft"
    assert created["organizer_id"] == organizer.id
    assert created["published_at"] is None and created["sections"] == []
    assert (created["name"], created["venue"], created["currency"]) == (
        "Night Concert",
        "Hall",
        "EUR",
    )
    assert (created["hold_ttl_s"], created["max_tickets_per_customer"]) == (120, 4)
    assert created["description"] == "Loud"
    assert await read_event(http, created["id"], organizer) == created


async def test_customer_and_anonymous_cannot_create_events(
    http: httpx.AsyncClient, buyer: User, database_url: str
) -> None:
    name = f"Not allowed {uuid.uuid4().hex}"
    problem(
        await http.post("/events", json={**EVENT, "name": name}, headers=buyer.auth),
        403,
        "forbidden",
    )
    r = await http.post("/events", json={**EVENT, "name": name})
    problem(r, 401, "invalid_token")
    assert r.headers["www-authenticate"] == "Bearer"
    r = await http.post(
        "/events", json={**EVENT, "name": name}, headers={"Authorization": "Bearer not-a-jwt"}
    )
    problem(r, 401, "invalid_token")
    assert await sql_rows(database_url, "SELECT id FROM events WHERE name = $1", name) == []


async def test_owner_changes_any_field_of_a_draft(http: httpx.AsyncClient, organizer: User) -> None:
    created = await draft(http, organizer)
    changes = {
        "name": "Matinee",
        "venue": "Annex",
        "description": "Quiet",
        "starts_at": "2027-07-01T14:00:00Z",
        "currency": "USD",
        "hold_ttl_s": 45,
        "max_tickets_per_customer": 3,
    }
    r = await http.patch(f"/events/{created['id']}", json=changes, headers=organizer.auth)
    assert r.status_code == 200, r.text
    after = await read_event(http, created["id"], organizer)
    assert after == r.json()
    assert {k: after[k] for k in changes if k != "starts_at"} == {
        k: v for k, v in changes.items() if k != "starts_at"
    }
    assert datetime.fromisoformat(after["starts_at"]) == datetime(2027, 7, 1, 14, tzinfo=UTC)
    assert after["status"] == "draft"


async def test_on_sale_event_takes_only_descriptive_changes(
    http: httpx.AsyncClient, organizer: User, event: dict[str, Any]
) -> None:
    url = f"/events/{event['id']}"
    r = await http.patch(
        url,
        json={"name": "Renamed", "venue": "Arena", "description": "New"},
        headers=organizer.auth,
    )
    assert r.status_code == 200, r.text
    assert (r.json()["name"], r.json()["venue"], r.json()["description"]) == (
        "Renamed",
        "Arena",
        "New",
    )
    before = await read_event(http, event["id"], organizer)
    for change in (
        {"currency": "USD"},
        {"hold_ttl_s": 60},
        {"max_tickets_per_customer": 1},
        {"starts_at": "2028-01-01T00:00:00Z"},
        {"name": "Sneaky", "currency": "GBP"},  # all or nothing
    ):
        problem(await http.patch(url, json=change, headers=organizer.auth), 409, "event_not_draft")
    assert await read_event(http, event["id"], organizer) == before
    assert before["currency"] == "EUR" and before["hold_ttl_s"] == 600


async def test_patch_with_null_for_a_required_field_is_a_validation_error(
    http: httpx.AsyncClient, organizer: User
) -> None:
    created = await draft(http, organizer)
    before = await read_event(http, created["id"], organizer)
    for change in ({"name": None}, {"currency": None}, {"hold_ttl_s": None}):
        r = await http.patch(f"/events/{created['id']}", json=change, headers=organizer.auth)
        problem(r, 422, "validation_error")
    assert await read_event(http, created["id"], organizer) == before


async def test_another_organizer_cannot_manage_an_event_on_sale(
    http: httpx.AsyncClient, organizer: User, rival: User, event: dict[str, Any]
) -> None:
    eid = event["id"]
    before = await read_event(http, eid, organizer)
    refusals = [
        await http.patch(f"/events/{eid}", json={"name": "Mine now"}, headers=rival.auth),
        await http.post(
            f"/events/{eid}/sections", json={**GENERAL, "code": "VIP"}, headers=rival.auth
        ),
        await http.post(f"/events/{eid}/publish", headers=rival.auth),
        await http.post(f"/events/{eid}/close", headers=rival.auth),
        await http.post(f"/events/{eid}/cancel", headers=rival.auth),
    ]
    for r in refusals:
        problem(r, 403, "forbidden")
    assert await read_event(http, eid, organizer) == before
    assert before["status"] == "on_sale"
    assert await counts(http, eid) == fresh_stats()  # still selling, nothing changed


async def test_another_organizer_cannot_touch_a_draft_it_cannot_see(
    http: httpx.AsyncClient, organizer: User, rival: User
) -> None:
    """Drafts are invisible to other organizers, so managing one answers 404
    (as GET does), never a change."""
    created = await draft(http, organizer)
    eid = created["id"]
    await http.post(f"/events/{eid}/sections", json=SEATED, headers=organizer.auth)
    before = await read_event(http, eid, organizer)
    refusals = [
        await http.patch(f"/events/{eid}", json={"currency": "USD"}, headers=rival.auth),
        await http.post(f"/events/{eid}/sections", json=GENERAL, headers=rival.auth),
        await http.post(f"/events/{eid}/publish", headers=rival.auth),
        await http.post(f"/events/{eid}/cancel", headers=rival.auth),
    ]
    for r in refusals:
        problem(r, 404, "not_found")
    assert await read_event(http, eid, organizer) == before
    assert before["status"] == "draft" and [s["code"] for s in before["sections"]] == ["A"]


async def test_admin_may_act_on_any_event(
    http: httpx.AsyncClient, organizer: User, admin: User
) -> None:
    created = await draft(http, organizer)
    eid = created["id"]
    assert (await read_event(http, eid, admin))["status"] == "draft"  # sees the draft
    r = await http.patch(f"/events/{eid}", json={"currency": "CHF"}, headers=admin.auth)
    assert r.status_code == 200 and r.json()["currency"] == "CHF", r.text
    r = await http.post(f"/events/{eid}/sections", json=GENERAL, headers=admin.auth)
    assert r.status_code == 201, r.text
    r = await http.post(f"/events/{eid}/publish", headers=admin.auth)
    assert r.status_code == 200 and r.json()["status"] == "on_sale", r.text
    assert (await counts(http, eid))["FLOOR"]["available"] == 20
    r = await http.post(f"/events/{eid}/close", headers=admin.auth)
    assert r.status_code == 200 and r.json()["status"] == "closed", r.text
    after = await read_event(http, eid, organizer)
    assert after["status"] == "closed" and after["organizer_id"] == organizer.id


async def test_draft_is_visible_to_its_owner_only(
    http: httpx.AsyncClient, organizer: User, rival: User, buyer: User
) -> None:
    created = await draft(http, organizer)
    eid = created["id"]
    assert (await read_event(http, eid, organizer))["id"] == eid
    problem(await http.get(f"/events/{eid}"), 404, "not_found")
    problem(await http.get(f"/events/{eid}", headers=buyer.auth), 404, "not_found")
    problem(await http.get(f"/events/{eid}", headers=rival.auth), 404, "not_found")
    problem(await http.get(f"/events/{eid}/availability"), 404, "not_found")
    problem(await http.get(f"/events/{eid}/seats", headers=buyer.auth), 404, "not_found")
    problem(await http.get("/events/ev_doesnotexist"), 404, "not_found")


@pytest.mark.parametrize(
    "body",
    [
        {**SEATED, "kind": "standing"},
        {**SEATED, "rows": 0},
        {k: v for k, v in GENERAL.items() if k != "capacity"},
        {**GENERAL, "balcony": True},
        {**SEATED, "code": "1-bad"},
        {**GENERAL, "price_cents": -1},
    ],
    ids=["bad-kind", "rows-0", "missing-capacity", "extra-field", "bad-code", "negative-price"],
)
async def test_invalid_section_bodies_are_validation_errors(
    http: httpx.AsyncClient, organizer: User, body: dict[str, Any]
) -> None:
    created = await draft(http, organizer)
    r = await http.post(f"/events/{created['id']}/sections", json=body, headers=organizer.auth)
    errors = problem(r, 422, "validation_error")["errors"]
    assert errors and all({"field", "message", "type"} <= set(e) for e in errors)
    assert (await read_event(http, created["id"], organizer))["sections"] == []


async def test_duplicate_section_code_conflicts(http: httpx.AsyncClient, organizer: User) -> None:
    created = await draft(http, organizer)
    url = f"/events/{created['id']}/sections"
    r = await http.post(url, json=SEATED, headers=organizer.auth)
    assert r.status_code == 201, r.text
    assert r.json() == {**{k: v for k, v in SEATED.items()}, "capacity": 12}
    dup = {**GENERAL, "code": "A", "name": "Other", "price_cents": 1}
    problem(await http.post(url, json=dup, headers=organizer.auth), 409, "section_exists")
    sections = (await read_event(http, created["id"], organizer))["sections"]
    assert [(s["code"], s["name"], s["kind"], s["price_cents"]) for s in sections] == [
        ("A", "Stalls", "seated", 4500)
    ]


async def test_sections_cannot_be_added_after_publish(
    http: httpx.AsyncClient, organizer: User, event: dict[str, Any]
) -> None:
    r = await http.post(
        f"/events/{event['id']}/sections", json={**GENERAL, "code": "VIP"}, headers=organizer.auth
    )
    problem(r, 409, "event_not_draft")
    assert [s["code"] for s in (await read_event(http, event["id"], organizer))["sections"]] == [
        "A",
        "FLOOR",
    ]
    assert set(await counts(http, event["id"])) == {"A", "FLOOR"}


async def test_publishing_without_sections_conflicts(
    http: httpx.AsyncClient, organizer: User
) -> None:
    created = await draft(http, organizer)
    r = await http.post(f"/events/{created['id']}/publish", headers=organizer.auth)
    problem(r, 409, "no_sections")
    after = await read_event(http, created["id"], organizer)
    assert after["status"] == "draft" and after["published_at"] is None
    problem(await http.get(f"/events/{created['id']}"), 404, "not_found")  # still hidden


async def test_event_list_shows_on_sale_events_newest_first_from_cache(
    http: httpx.AsyncClient, organizer: User, database_url: str
) -> None:
    older = await on_sale_event(http, organizer, name="Older")
    newer = await on_sale_event(http, organizer, name="Newer")
    hidden = await draft(http, organizer, name="Hidden draft")
    r = await http.get("/events", params={"size": 100})
    assert r.status_code == 200, r.text
    assert r.headers["x-cache"] == "miss"
    page = r.json()
    on_sale = await sql_rows(
        database_url, "SELECT count(*) AS n FROM events WHERE status = 'on_sale'"
    )
    assert page["total"] == on_sale[0]["n"] and (page["page"], page["size"]) == (1, 100)
    ids = [e["id"] for e in page["items"]]
    assert ids[:2] == [newer["id"], older["id"]]
    assert hidden["id"] not in ids
    assert all(e["status"] == "on_sale" for e in page["items"])
    published = [datetime.fromisoformat(e["published_at"]) for e in page["items"]]
    assert published == sorted(published, reverse=True)
    assert [s["code"] for s in page["items"][0]["sections"]] == ["A", "FLOOR"]

    again = await http.get("/events", params={"size": 100})
    assert again.status_code == 200 and again.headers["x-cache"] == "hit"
    assert again.json() == page

    first = await http.get("/events", params={"size": 1, "page": 1})
    second = await http.get("/events", params={"size": 1, "page": 2})
    assert [e["id"] for e in first.json()["items"]] == [newer["id"]]
    assert [e["id"] for e in second.json()["items"]] == [older["id"]]
    assert first.json()["total"] == second.json()["total"] == page["total"]
    assert (second.json()["page"], second.json()["size"]) == (2, 1)


async def test_publish_close_and_cancel_invalidate_the_cached_list(
    http: httpx.AsyncClient, organizer: User
) -> None:
    async def listed() -> list[str]:
        r = await http.get("/events", params={"size": 100})
        assert r.status_code == 200, r.text
        return [e["id"] for e in r.json()["items"]]

    first = await on_sale_event(http, organizer)
    assert first["id"] in await listed()
    r = await http.get("/events", params={"size": 100})
    assert r.headers["x-cache"] == "hit"  # cached from here on

    second = await on_sale_event(http, organizer)  # publish drops the cache
    assert (await listed())[0] == second["id"]

    await listed()
    r = await http.post(f"/events/{first['id']}/close", headers=organizer.auth)
    assert r.status_code == 200, r.text
    r = await http.get("/events", params={"size": 100})
    assert r.headers["x-cache"] == "miss"
    assert first["id"] not in [e["id"] for e in r.json()["items"]]

    await listed()
    r = await http.post(f"/events/{second['id']}/cancel", headers=organizer.auth)
    assert r.status_code == 200, r.text
    assert second["id"] not in await listed()


async def test_close_then_cancel(
    http: httpx.AsyncClient, organizer: User, buyer: User, event: dict[str, Any]
) -> None:
    eid = event["id"]
    r = await http.post(f"/events/{eid}/close", headers=organizer.auth)
    assert r.status_code == 200 and r.json()["status"] == "closed", r.text
    problem(await hold(http, buyer, eid, seats=["A-1-1"]), 409, "event_not_on_sale")
    r = await http.post(f"/events/{eid}/cancel", headers=organizer.auth)
    assert r.status_code == 200 and r.json()["status"] == "cancelled", r.text
    problem(await http.post(f"/events/{eid}/close", headers=organizer.auth), 409, "invalid_state")
    problem(await http.post(f"/events/{eid}/publish", headers=organizer.auth), 409, "invalid_state")
    r = await http.patch(f"/events/{eid}", json={"name": "Revived"}, headers=organizer.auth)
    problem(r, 409, "event_ended")
    assert (await read_event(http, eid, organizer))["status"] == "cancelled"
    problem(await hold(http, buyer, eid, section="FLOOR", quantity=1), 409, "event_not_on_sale")
    assert await counts(http, eid) == fresh_stats()


async def test_closing_a_draft_is_an_invalid_state(
    http: httpx.AsyncClient, organizer: User
) -> None:
    created = await draft(http, organizer)
    r = await http.post(f"/events/{created['id']}/close", headers=organizer.auth)
    problem(r, 409, "invalid_state")
    assert (await read_event(http, created["id"], organizer))["status"] == "draft"


# ---------------------------------------------------------------- availability and seats


async def test_availability_counts_follow_a_hold(
    http: httpx.AsyncClient, buyer: User, event: dict[str, Any]
) -> None:
    r = await http.get(f"/events/{event['id']}/availability")
    assert r.status_code == 200
    version = r.json()["version"]
    assert await counts(http, event["id"]) == fresh_stats()
    await held(http, buyer, event["id"], seats=["A-1-1", "A-1-2"])
    await held(http, buyer, event["id"], section="FLOOR", quantity=5)
    r = await http.get(f"/events/{event['id']}/availability")
    assert r.json()["version"] > version
    assert await counts(http, event["id"]) == {
        "A": {"capacity": 12, "available": 10, "held": 2, "sold": 0},
        "FLOOR": {"capacity": 20, "available": 15, "held": 5, "sold": 0},
    }


async def test_seat_map_lists_every_seat_and_filters_by_section(
    http: httpx.AsyncClient, organizer: User, buyer: User
) -> None:
    box = {
        "kind": "seated",
        "code": "B",
        "name": "Box",
        "price_cents": 9000,
        "rows": 1,
        "seats_per_row": 2,
    }
    ev = await on_sale_event(http, organizer, sections=[SEATED, box, GENERAL])
    await held(http, buyer, ev["id"], seats=["A-2-3", "B-1-2"])
    everything = await seat_map(http, ev["id"])
    expected_a = {f"A-{r}-{n}": "available" for r in range(1, 4) for n in range(1, 5)}
    expected_a["A-2-3"] = "held"
    assert everything == {**expected_a, "B-1-1": "available", "B-1-2": "held"}
    assert await seat_map(http, ev["id"], "A") == expected_a
    assert await seat_map(http, ev["id"], "B") == {"B-1-1": "available", "B-1-2": "held"}
    for unknown in ("Z", "FLOOR"):  # no such seated section
        r = await http.get(f"/events/{ev['id']}/seats", params={"section": unknown})
        problem(r, 404, "not_found")


async def test_draft_has_no_availability(http: httpx.AsyncClient, organizer: User) -> None:
    created = await draft(http, organizer)
    await http.post(f"/events/{created['id']}/sections", json=SEATED, headers=organizer.auth)
    r = await http.get(f"/events/{created['id']}/availability", headers=organizer.auth)
    problem(r, 409, "event_not_on_sale")
    r = await http.get(f"/events/{created['id']}/seats", headers=organizer.auth)
    problem(r, 409, "event_not_on_sale")


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
    http: httpx.AsyncClient, buyer: User, other: User, event: dict[str, Any]
) -> None:
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
    http: httpx.AsyncClient, buyer: User, event: dict[str, Any]
) -> None:
    for seats in (["Z-1-1"], ["A-1-1", "FLOOR-1-1"], ["A-4-1"], ["A-1-5"]):
        r = await hold(http, buyer, event["id"], seats=seats)
        problem(r, 422, "unknown_seat")
    assert await counts(http, event["id"]) == fresh_stats()


async def test_general_hold_on_a_seated_section_is_the_wrong_kind(
    http: httpx.AsyncClient, buyer: User, event: dict[str, Any]
) -> None:
    problem(
        await hold(http, buyer, event["id"], section="A", quantity=2), 422, "wrong_section_kind"
    )
    problem(
        await hold(http, buyer, event["id"], section="NOPE", quantity=2), 422, "unknown_section"
    )
    assert await counts(http, event["id"]) == fresh_stats()


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
    http: httpx.AsyncClient, buyer: User, event: dict[str, Any], body: dict[str, Any]
) -> None:
    r = await hold(http, buyer, event["id"], **body)
    assert problem(r, 422, "validation_error")["errors"]
    assert await counts(http, event["id"]) == fresh_stats()


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
    http: httpx.AsyncClient, organizer: User, admin: User, event: dict[str, Any]
) -> None:
    for who in (organizer, admin):
        problem(await hold(http, who, event["id"], seats=["A-1-1"]), 403, "forbidden")
    problem(
        await http.post(f"/events/{event['id']}/holds", json={"seats": ["A-1-1"]}),
        401,
        "invalid_token",
    )
    assert await counts(http, event["id"]) == fresh_stats()


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


async def test_order_retried_with_the_same_key_is_created_once(
    http: httpx.AsyncClient, buyer: User, event: dict[str, Any], database_url: str
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
    rows = await sql_rows(
        database_url,
        "SELECT id FROM orders WHERE hold_id = ANY($1::text[])",
        [placed["hold_id"], other_hold["hold_id"]],
    )
    assert [r["id"] for r in rows] == [first.json()["order_id"]]


# ---------------------------------------------------------------- orders


async def test_order_for_a_hold_awaits_payment(
    http: httpx.AsyncClient, buyer: User, event: dict[str, Any], database_url: str
) -> None:
    placed = await held(http, buyer, event["id"], seats=["A-1-1", "A-1-2"])
    ga = await held(http, buyer, event["id"], section="FLOOR", quantity=3)
    r = await order(http, buyer, placed["hold_id"])
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["order_id"] and body["status"] == "pending_payment"
    assert (body["event_id"], body["hold_id"]) == (event["id"], placed["hold_id"])
    assert (body["amount_cents"], body["currency"]) == (9000, "EUR")
    # The hold is kept for the payment window (15 min by default), not forever,
    # and the order expires with it.
    extended = (await http.get(f"/holds/{placed['hold_id']}", headers=buyer.auth)).json()
    assert body["expires_at"] == extended["expires_at"]
    order_expiry = datetime.fromisoformat(body["expires_at"])
    assert order_expiry > datetime.fromisoformat(placed["expires_at"])
    assert order_expiry <= datetime.now(UTC) + timedelta(seconds=900)
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
    http: httpx.AsyncClient, buyer: User, event: dict[str, Any], database_url: str
) -> None:
    placed = await held(http, buyer, event["id"], section="FLOOR", quantity=1)
    first = await order(http, buyer, placed["hold_id"])
    assert first.status_code == 201, first.text
    body = problem(await order(http, buyer, placed["hold_id"]), 409, "order_exists")
    assert body["order_id"] == first.json()["order_id"]
    rows = await sql_rows(
        database_url, "SELECT id FROM orders WHERE hold_id = $1", placed["hold_id"]
    )
    assert [r["id"] for r in rows] == [first.json()["order_id"]]


async def test_order_for_someone_elses_hold_is_not_found(
    http: httpx.AsyncClient, buyer: User, other: User, event: dict[str, Any], database_url: str
) -> None:
    placed = await held(http, buyer, event["id"], seats=["A-1-1"])
    problem(await order(http, other, placed["hold_id"]), 404, "not_found")
    problem(await order(http, other, "hl_missing.ev_nothing"), 404, "not_found")
    rows = await sql_rows(
        database_url, "SELECT id FROM orders WHERE hold_id = $1", placed["hold_id"]
    )
    assert rows == []
    r = await http.get("/orders", headers=other.auth)
    assert r.status_code == 200 and r.json()["items"] == []
    # the holder still can
    assert (await order(http, buyer, placed["hold_id"])).status_code == 201


async def test_order_for_a_released_hold_is_gone(
    http: httpx.AsyncClient, buyer: User, event: dict[str, Any], database_url: str
) -> None:
    placed = await held(http, buyer, event["id"], seats=["A-1-1"])
    r = await http.delete(f"/holds/{placed['hold_id']}", headers=buyer.auth)
    assert r.status_code == 204
    problem(await order(http, buyer, placed["hold_id"]), 410, "hold_expired")
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
) -> None:
    """Cancelling stops new sales: a hold placed before may not be checked out."""
    placed = await held(http, buyer, event["id"], seats=["A-1-1"])
    r = await http.post(f"/events/{event['id']}/cancel", headers=organizer.auth)
    assert r.status_code == 200, r.text
    r = await order(http, buyer, placed["hold_id"])
    assert r.status_code == 409, r.text
    assert r.json()["code"] in ("event_ended", "event_not_on_sale"), r.json()
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


async def test_overlong_idempotency_key_is_a_validation_error(
    http: httpx.AsyncClient, buyer: User, event: dict[str, Any]
) -> None:
    r = await hold(http, buyer, event["id"], "k" * 256, seats=["A-1-1"])
    problem(r, 422, "validation_error")
    assert await counts(http, event["id"]) == fresh_stats()


# ---------------------------------------------------------------- rate limit


async def test_holds_are_rate_limited_per_user(
    redis_url: str,
    database_url: str,
    ray_local: str,
    db: AsyncEngine,
    tmp_path: Any,
) -> None:
    async with running_app(
        redis_url, database_url, tmp_path, rate_limits="holds=3/minute,global=10000/minute"
    ) as (_, client):
        organizer = await user_with_role(db, client, "organizer")
        ev = await on_sale_event(client, organizer)
        greedy = await register(client, "greedy")
        patient = await register(client, "patient")
        for _ in range(3):
            await held(client, greedy, ev["id"], section="FLOOR", quantity=1)
        r = await hold(client, greedy, ev["id"], section="FLOOR", quantity=1)
        body = problem(r, 429, "rate_limited")
        assert 1 <= int(r.headers["retry-after"]) <= 60
        assert body["retry_after_s"] == int(r.headers["retry-after"])
        assert (await counts(client, ev["id"]))["FLOOR"]["held"] == 3
        await held(client, patient, ev["id"], section="FLOOR", quantity=1)
        assert (await counts(client, ev["id"]))["FLOOR"]["held"] == 4
