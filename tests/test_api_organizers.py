"""Becoming an organizer and changing roles, over HTTP against the real app:
applications, an admin's decision, and who may do either."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.api_http import (
    EVENT,
    make_user,
    problem,
    refresh,
    role_in_db,
)
from tests.api_support import (
    User,
    login,
    register,
)

# ---------------------------------------------------------------- organizer applications


async def _apply(http: httpx.AsyncClient, user: User, org: str = "Acme Live") -> httpx.Response:
    return await http.post("/organizer-applications", json={"organization": org}, headers=user.auth)


async def _listed(http: httpx.AsyncClient, admin: User, application_id: str) -> dict[str, Any]:
    r = await http.get("/admin/organizer-applications", headers=admin.auth)
    assert r.status_code == 200, r.text
    matches = [a for a in r.json() if a["id"] == application_id]
    assert len(matches) == 1, r.json()
    return dict(matches[0])


async def test_a_customer_applies_and_gets_a_pending_application(
    http: httpx.AsyncClient,
) -> None:
    user = await register(http, "apply")
    r = await _apply(http, user, "Acme Concerts")
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["status"] == "pending"
    assert body["user_id"] == user.id
    assert body["organization"] == "Acme Concerts"
    assert body["decided_at"] is None
    uuid.UUID(body["id"])


async def test_a_second_pending_application_is_409_application_exists(
    http: httpx.AsyncClient, db: AsyncEngine
) -> None:
    user = await register(http, "apply2")
    first = await _apply(http, user)
    assert first.status_code == 201, first.text
    problem(await _apply(http, user, "Other Org"), 409, "application_exists")
    admin = await make_user(db, http, "admin")
    r = await http.get("/admin/organizer-applications", headers=admin.auth)
    assert [a["id"] for a in r.json() if a["user_id"] == user.id] == [first.json()["id"]]


@pytest.mark.parametrize("role", ["organizer", "admin"])
async def test_organizers_and_admins_cannot_apply(
    http: httpx.AsyncClient, db: AsyncEngine, role: str
) -> None:
    user = await make_user(db, http, role)
    problem(await _apply(http, user), 409, "not_a_customer")
    admin = await make_user(db, http, "admin")
    r = await http.get("/admin/organizer-applications", headers=admin.auth)
    assert all(a["user_id"] != user.id for a in r.json())


async def test_applying_needs_an_access_token(http: httpx.AsyncClient) -> None:
    r = await http.post("/organizer-applications", json={"organization": "Anon"})
    problem(r, 401, "invalid_token")


@pytest.mark.parametrize("role", ["customer", "organizer"])
async def test_non_admins_cannot_list_or_decide_applications(
    http: httpx.AsyncClient, db: AsyncEngine, role: str
) -> None:
    applicant = await register(http, "applicant")
    application = (await _apply(http, applicant)).json()
    caller = await make_user(db, http, role)

    problem(await http.get("/admin/organizer-applications", headers=caller.auth), 403, "forbidden")
    for action in ("approve", "reject"):
        r = await http.post(
            f"/admin/organizer-applications/{application['id']}/{action}", headers=caller.auth
        )
        problem(r, 403, "forbidden")

    admin = await make_user(db, http, "admin")
    assert (await _listed(http, admin, application["id"]))["status"] == "pending"
    assert await role_in_db(db, applicant.id) == "customer"


async def test_approval_makes_the_applicant_an_organizer_once_they_sign_in_again(
    http: httpx.AsyncClient, db: AsyncEngine
) -> None:
    admin = await make_user(db, http, "admin")
    applicant = await register(http, "promoted")
    application = (await _apply(http, applicant)).json()

    listed = await _listed(http, admin, application["id"])
    assert listed["status"] == "pending" and listed["user_id"] == applicant.id
    pending = await http.get(
        "/admin/organizer-applications", params={"status": "pending"}, headers=admin.auth
    )
    assert application["id"] in [a["id"] for a in pending.json()]
    assert all(a["status"] == "pending" for a in pending.json())

    # A customer may not create events.
    problem(await http.post("/events", json=EVENT, headers=applicant.auth), 403, "forbidden")

    r = await http.post(
        f"/admin/organizer-applications/{application['id']}/approve", headers=admin.auth
    )
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "approved"
    assert r.json()["decided_at"] is not None
    assert await role_in_db(db, applicant.id) == "organizer"

    # The customer's token and session ended with the approval; signed in
    # again, the applicant is an organizer.
    problem(await http.get("/auth/me", headers=applicant.auth), 401, "invalid_token")
    problem(await refresh(http, applicant.refresh), 401, "invalid_token")
    again = await login(http, applicant.email)
    assert again.role == "organizer"
    new_auth = again.auth
    me = await http.get("/auth/me", headers=new_auth)
    assert me.json()["role"] == "organizer"
    created = await http.post("/events", json=EVENT, headers=new_auth)
    assert created.status_code == 201, created.text
    assert created.json()["organizer_id"] == applicant.id
    assert created.json()["status"] == "draft"

    # Deciding again is refused, either way, and the decision stands.
    for action in ("approve", "reject"):
        again = await http.post(
            f"/admin/organizer-applications/{application['id']}/{action}", headers=admin.auth
        )
        problem(again, 409, "application_decided")
    assert (await _listed(http, admin, application["id"]))["status"] == "approved"
    assert await role_in_db(db, applicant.id) == "organizer"


async def test_rejection_keeps_the_applicant_a_customer_who_may_apply_again(
    http: httpx.AsyncClient, db: AsyncEngine
) -> None:
    admin = await make_user(db, http, "admin")
    applicant = await register(http, "rejected")
    application = (await _apply(http, applicant)).json()

    r = await http.post(
        f"/admin/organizer-applications/{application['id']}/reject", headers=admin.auth
    )
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "rejected"
    assert await role_in_db(db, applicant.id) == "customer"
    rotated = await refresh(http, applicant.refresh)
    assert rotated.json()["user"]["role"] == "customer"

    again = await http.post(
        f"/admin/organizer-applications/{application['id']}/approve", headers=admin.auth
    )
    problem(again, 409, "application_decided")
    assert await role_in_db(db, applicant.id) == "customer"

    # A rejected application is not pending: a new one may be made.
    assert (await _apply(http, applicant, "Second Try")).status_code == 201


async def test_deciding_an_unknown_application_is_404_not_found(
    http: httpx.AsyncClient, db: AsyncEngine
) -> None:
    admin = await make_user(db, http, "admin")
    for action in ("approve", "reject"):
        r = await http.post(
            f"/admin/organizer-applications/{uuid.uuid4()}/{action}", headers=admin.auth
        )
        problem(r, 404, "not_found")


async def test_admin_sets_a_users_role(http: httpx.AsyncClient, db: AsyncEngine) -> None:
    admin = await make_user(db, http, "admin")
    user = await register(http, "rolechange")
    r = await http.patch(
        f"/admin/users/{user.id}/role", json={"role": "organizer"}, headers=admin.auth
    )
    assert r.status_code == 200, r.text
    assert r.json() == {
        "id": user.id,
        "email": user.email,
        "name": "Rolechange",
        "role": "organizer",
    }
    assert await role_in_db(db, user.id) == "organizer"
    # The customer's token and session ended with the role; signed in again,
    # the user is an organizer.
    problem(await http.get("/auth/me", headers=user.auth), 401, "invalid_token")
    problem(await refresh(http, user.refresh), 401, "invalid_token")
    again = await login(http, user.email)
    assert again.role == "organizer"
    created = await http.post("/events", json=EVENT, headers=again.auth)
    assert created.status_code == 201, created.text


@pytest.mark.parametrize("role", ["customer", "organizer"])
async def test_non_admins_cannot_set_roles(
    http: httpx.AsyncClient, db: AsyncEngine, role: str
) -> None:
    caller = await make_user(db, http, role)
    r = await http.patch(
        f"/admin/users/{caller.id}/role", json={"role": "admin"}, headers=caller.auth
    )
    problem(r, 403, "forbidden")
    assert await role_in_db(db, caller.id) == role


async def test_setting_an_invalid_role_is_422_and_changes_nothing(
    http: httpx.AsyncClient, db: AsyncEngine
) -> None:
    admin = await make_user(db, http, "admin")
    user = await register(http, "badrole")
    r = await http.patch(
        f"/admin/users/{user.id}/role", json={"role": "superuser"}, headers=admin.auth
    )
    refusal = problem(r, 422, "validation_error")
    assert "role" in [e["field"] for e in refusal["errors"]]
    assert await role_in_db(db, user.id) == "customer"


async def test_setting_the_role_of_an_unknown_user_is_404(
    http: httpx.AsyncClient, db: AsyncEngine
) -> None:
    admin = await make_user(db, http, "admin")
    r = await http.patch(
        f"/admin/users/{uuid.uuid4()}/role", json={"role": "organizer"}, headers=admin.auth
    )
    problem(r, 404, "not_found")
