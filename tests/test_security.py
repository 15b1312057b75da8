"""Sale integrity against people who try to cheat, over HTTP against the real
app: a demoted admin or organizer with an old token, a logged-out token, an
ex-organizer's owner powers. Each test names the finding it closes."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
from sqlalchemy.ext.asyncio import AsyncEngine

from api import security
from sales.vocabulary import Role
from tests.api_http import (
    EVENT,
    bearer,
    held,
    make_user,
    order,
    problem,
    refresh,
    role_in_db,
)
from tests.api_support import RunningApi, User, login, on_sale_event


async def _set_role(http: httpx.AsyncClient, admin: User, who: str, role: str) -> httpx.Response:
    return await http.patch(f"/admin/users/{who}/role", json={"role": role}, headers=admin.auth)


# ---------------------------------------------------------------- finding 2: demotion


async def test_a_demoted_admin_is_refused_on_its_next_request_and_cannot_re_promote_itself(
    http: httpx.AsyncClient, db: AsyncEngine
) -> None:
    demoted, other_admin = await make_user(db, http, "admin"), await make_user(db, http, "admin")
    assert (
        await http.get("/admin/organizer-applications", headers=demoted.auth)
    ).status_code == 200

    r = await _set_role(http, other_admin, demoted.id, "customer")
    assert r.status_code == 200, r.text

    # The old token no longer works anywhere: not to re-promote itself, not to read.
    problem(await _set_role(http, demoted, demoted.id, "admin"), 401, "invalid_token")
    problem(
        await http.get("/admin/organizer-applications", headers=demoted.auth), 401, "invalid_token"
    )
    assert await role_in_db(db, demoted.id) == "customer"
    # Its sessions ended with the role: the refresh token is refused too.
    problem(await refresh(http, demoted.refresh), 401, "invalid_token")
    # Signed in again, it is a customer.
    again = await login(http, demoted.email)
    assert again.role == "customer"
    problem(await _set_role(http, again, demoted.id, "admin"), 403, "forbidden")
    assert await role_in_db(db, demoted.id) == "customer"


async def test_nobody_changes_their_own_role(http: httpx.AsyncClient, db: AsyncEngine) -> None:
    admin = await make_user(db, http, "admin")
    problem(await _set_role(http, admin, admin.id, "customer"), 403, "own_role")
    assert await role_in_db(db, admin.id) == "admin"
    # Nothing was revoked by the refusal.
    assert (await http.get("/auth/me", headers=admin.auth)).status_code == 200


async def test_a_demoted_organizer_cannot_create_or_publish_with_its_old_token(
    http: httpx.AsyncClient, db: AsyncEngine
) -> None:
    organizer, admin = await make_user(db, http, "organizer"), await make_user(db, http, "admin")
    draft = await http.post("/events", json=EVENT, headers=organizer.auth)
    assert draft.status_code == 201, draft.text

    assert (await _set_role(http, admin, organizer.id, "customer")).status_code == 200

    problem(await http.post("/events", json=EVENT, headers=organizer.auth), 401, "invalid_token")
    publish = await http.post(f"/events/{draft.json()['id']}/publish", headers=organizer.auth)
    problem(publish, 401, "invalid_token")
    fresh = await login(http, organizer.email)
    problem(await http.post("/events", json=EVENT, headers=fresh.auth), 403, "forbidden")


async def test_logout_revokes_the_access_token_on_the_next_request_hold_path_included(
    http: httpx.AsyncClient, db: AsyncEngine, event: dict[str, Any], inproc: RunningApi
) -> None:
    buyer = await make_user(db, http, "customer")
    first = await held(http, buyer, event["id"], seats=["A-1-1"])
    assert first["seats"] == ["A-1-1"]
    cached = (inproc.jwt_secret, buyer.access)
    assert cached in security._verified

    out = await http.post("/auth/logout", json={"refresh_token": buyer.refresh}, headers=buyer.auth)
    assert out.status_code == 204, out.text

    hold = await http.post(
        f"/events/{event['id']}/holds", json={"seats": ["A-1-2"]}, headers=buyer.auth
    )
    problem(hold, 401, "invalid_token")
    assert cached not in security._verified  # the per-process cache forgot it
    problem(await http.get("/auth/me", headers=buyer.auth), 401, "invalid_token")
    # A new sign-in works, under the version the logout set.
    again = await login(http, buyer.email)
    assert (await held(http, again, event["id"], seats=["A-1-2"]))["seats"] == ["A-1-2"]


async def test_a_minted_token_without_a_version_works_until_the_users_first_role_change(
    http: httpx.AsyncClient, db: AsyncEngine, inproc: RunningApi
) -> None:
    """Tests and benchmarks mint tokens without logging in: version 0."""
    admin = await make_user(db, http, "admin")
    organizer = await make_user(db, http, "organizer")
    minted = bearer(inproc.token(uuid.UUID(organizer.id), Role.ORGANIZER))
    assert (await http.post("/events", json=EVENT, headers=minted)).status_code == 201
    assert (await _set_role(http, admin, organizer.id, "customer")).status_code == 200
    problem(await http.post("/events", json=EVENT, headers=minted), 401, "invalid_token")


# ---------------------------------------------------------------- finding 6: owner powers


async def test_an_ex_organizer_keeps_no_owner_powers_over_its_events(
    http: httpx.AsyncClient, db: AsyncEngine
) -> None:
    organizer, admin = await make_user(db, http, "organizer"), await make_user(db, http, "admin")
    buyer = await make_user(db, http, "customer")
    event = await on_sale_event(http, organizer)
    placed = await held(http, buyer, event["id"], seats=["A-1-1"])
    made = await order(http, buyer, placed["hold_id"])
    assert made.status_code == 201, made.text
    order_id = made.json()["order_id"]
    scan = {"token": "not-a-ticket"}

    # As organizer: the buyer's order is visible and the door is theirs.
    assert (await http.get(f"/orders/{order_id}", headers=organizer.auth)).status_code == 200
    r = await http.post(f"/events/{event['id']}/checkins", json=scan, headers=organizer.auth)
    problem(r, 400, "invalid_ticket")  # past the owner check, refused as a ticket

    assert (await _set_role(http, admin, organizer.id, "customer")).status_code == 200
    ex = await login(http, organizer.email)  # a fresh, valid customer token
    assert ex.role == "customer"

    problem(await http.get(f"/orders/{order_id}", headers=ex.auth), 404, "not_found")
    problem(
        await http.post(f"/events/{event['id']}/checkins", json=scan, headers=ex.auth),
        403,
        "forbidden",
    )
    stats = await http.get(f"/events/{event['id']}/checkins/stats", headers=ex.auth)
    problem(stats, 403, "forbidden")
    problem(await http.post(f"/orders/{order_id}/refund", headers=ex.auth), 404, "not_found")
