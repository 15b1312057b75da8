"""Events and seat maps over HTTP against the real app (real Redis, Postgres
and Ray): who may create, edit, publish, close and cancel, what each role
sees, and availability and seats read back. Every refusal is checked for its
status, its problem+json ``code`` and for having changed nothing."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
import sqlalchemy.event
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine

from engine.scripts import EventKeys
from persistence.retire import retire_finished
from tests.api_http import (
    EVENT,
    counts,
    draft,
    fresh_stats,
    held,
    hold,
    problem,
    read_event,
    seat_map,
    sql_rows,
)
from tests.api_support import (
    GENERAL,
    SEATED,
    RunningApi,
    User,
    on_sale_event,
)


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


# ---------------------------------------------------------------- reads from the hot store


async def test_public_reads_of_an_event_on_sale_make_no_postgres_query(
    inproc: RunningApi, http: httpx.AsyncClient, event: dict[str, Any], buyer: User
) -> None:
    assert inproc.app is not None
    queries: list[str] = []

    def count(*args: Any) -> None:
        queries.append(str(args[2]))

    engine = inproc.app.state.db.sync_engine
    sqlalchemy.event.listen(engine, "before_cursor_execute", count)
    try:
        for _ in range(3):
            for path in ("", "/availability", "/seats"):
                r = await http.get(f"/events/{event['id']}{path}")
                assert r.status_code == 200, r.text
            await held(http, buyer, event["id"], section="FLOOR", quantity=1)
    finally:
        sqlalchemy.event.remove(engine, "before_cursor_execute", count)
    assert queries == []


async def test_public_reads_carry_etags_and_answer_304_until_they_change(
    http: httpx.AsyncClient, event: dict[str, Any], buyer: User, organizer: User
) -> None:
    for path in ("", "/availability", "/seats"):
        first = await http.get(f"/events/{event['id']}{path}")
        tag = first.headers["etag"]
        assert first.headers["cache-control"] == "public, max-age=1"
        again = await http.get(f"/events/{event['id']}{path}", headers={"If-None-Match": tag})
        assert again.status_code == 304 and again.content == b"" and again.headers["etag"] == tag
    before = (await http.get(f"/events/{event['id']}/availability")).headers["etag"]
    await held(http, buyer, event["id"], seats=["A-1-1"])
    after = await http.get(f"/events/{event['id']}/availability", headers={"If-None-Match": before})
    assert after.status_code == 200 and after.headers["etag"] != before
    assert after.json()["sections"][0]["held"] == 1
    card = (await http.get(f"/events/{event['id']}")).headers["etag"]
    r = await http.patch(f"/events/{event['id']}", json={"name": "Renamed"}, headers=organizer.auth)
    assert r.status_code == 200, r.text
    renamed = await http.get(f"/events/{event['id']}", headers={"If-None-Match": card})
    assert renamed.status_code == 200 and renamed.json()["name"] == "Renamed"


async def test_a_draft_is_read_from_postgres_privately(
    http: httpx.AsyncClient, organizer: User
) -> None:
    made = await draft(http, organizer)
    r = await http.get(f"/events/{made['id']}", headers=organizer.auth)
    assert r.status_code == 200 and r.headers["cache-control"] == "private, no-store"
    assert "etag" not in r.headers


async def test_public_reads_answer_as_their_routes_do_on_the_lean_path(
    http: httpx.AsyncClient, event: dict[str, Any], organizer: User, buyer: User
) -> None:
    """/events/{id} and /availability are served ahead of FastAPI's routing:
    the same bodies, a bad token still 401, a draft and a stranger's draft
    still the route's (its owner sees it, others get 404), an unknown id 404."""
    for path in ("", "/availability"):
        url = f"/events/{event['id']}{path}"
        anonymous, signed_in = await http.get(url), await http.get(url, headers=buyer.auth)
        assert anonymous.status_code == signed_in.status_code == 200
        assert anonymous.json() == signed_in.json()
        assert anonymous.headers["content-type"] == "application/json"
        assert anonymous.headers["x-request-id"]
        problem(await http.get(url, headers={"Authorization": "Bearer nope"}), 401, "invalid_token")
        problem(await http.get(f"/events/ev_nosuchevent{path}"), 404, "not_found")
    assert (await http.get(f"/events/{event['id']}")).json()["id"] == event["id"]
    made = await draft(http, organizer)
    assert (await http.get(f"/events/{made['id']}", headers=organizer.auth)).status_code == 200
    problem(await http.get(f"/events/{made['id']}", headers=buyer.auth), 404, "not_found")
    problem(await http.get(f"/events/{made['id']}/availability", headers=buyer.auth), 404,
            "not_found")  # fmt: skip
    problem(await http.get(f"/events/{made['id']}/availability", headers=organizer.auth), 409,
            "event_not_on_sale")  # fmt: skip


async def test_a_retired_events_availability_and_seat_map_come_back_from_postgres(
    http: httpx.AsyncClient, organizer: User, db: AsyncEngine, redis: Redis
) -> None:
    """A finished event's inventory leaves Redis (persistence.retire); its
    public reads rebuild it instead of answering 503 for good."""
    event = await on_sale_event(http, organizer)
    r = await http.post(f"/events/{event['id']}/close", headers=organizer.auth)
    assert r.status_code == 200, r.text
    before = await http.get(f"/events/{event['id']}/availability")
    assert before.status_code == 200, before.text
    after_the_show = datetime.fromisoformat(event["starts_at"]) + timedelta(days=8)
    assert event["id"] in await retire_finished(redis, db, after_s=7 * 86400, now=after_the_show)
    assert await redis.exists(EventKeys(event["id"]).meta) == 0

    again = await http.get(f"/events/{event['id']}/availability")
    assert again.status_code == 200, again.text
    assert again.json()["sections"] == before.json()["sections"]
    assert again.json()["version"] > before.json()["version"]  # a jump: viewers resync
    seats = await http.get(f"/events/{event['id']}/seats")
    assert seats.status_code == 200, seats.text
    assert {s["status"] for s in seats.json()["seats"]} == {"available"}
