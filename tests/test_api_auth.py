"""Accounts, sessions, roles and the request guards, over HTTP against the real
app (real Redis, Postgres and Ray): register/login/me, rotating refresh tokens
and their families, organizer applications and admin roles, rate limits, the
body-size limit and X-Request-ID."""

from __future__ import annotations

import base64
import json
import random
import time
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from fastapi import FastAPI
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from api.security import ISSUER, hash_password, issue_access_token
from persistence import accounts
from persistence.models import User as UserRow
from tests.api_support import PASSWORD, User, login, register, running_app, unique_email

EVENT = {
    "name": "Night Concert",
    "venue": "Hall",
    "starts_at": "2027-06-01T20:00:00Z",
    "currency": "EUR",
}


# ---------------------------------------------------------------- helpers


@pytest.fixture(scope="module")
async def served(
    redis_url: str,
    database_url: str,
    ray_local: str,
    db: AsyncEngine,
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    """One app (rate limits off) shared by the tests that need no special settings;
    ``db`` makes sure the schema is migrated first."""
    async with running_app(redis_url, database_url, tmp_path_factory.mktemp("auth")) as pair:
        yield pair


@pytest.fixture
def app(served: tuple[FastAPI, httpx.AsyncClient]) -> FastAPI:
    return served[0]


@pytest.fixture
def http(served: tuple[FastAPI, httpx.AsyncClient]) -> httpx.AsyncClient:
    return served[1]


def assert_problem(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json"), response.headers
    body: dict[str, Any] = response.json()
    assert body["code"] == code, body
    assert body["status"] == status
    assert body["type"].endswith(f"/{code}")
    assert body["title"] and body["detail"]
    return body


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def random_client() -> tuple[str, int]:
    """A client address no other test uses, so Redis-stored limits do not mix."""
    return (f"198.51.100.{random.randint(1, 254)}", random.randint(1024, 65000))


def client_for(app: FastAPI, address: tuple[str, int]) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, client=address)
    return httpx.AsyncClient(transport=transport, base_url="http://onsale.test")


async def users_with_email(db: AsyncEngine, email: str) -> int:
    async with db.connect() as conn:
        count = await conn.scalar(
            select(func.count())
            .select_from(UserRow)
            .where(func.lower(UserRow.email) == email.lower())
        )
    return int(count or 0)


async def role_in_db(db: AsyncEngine, user_id: str) -> str:
    async with db.connect() as conn:
        role = await conn.scalar(select(UserRow.role).where(UserRow.id == uuid.UUID(user_id)))
    assert role is not None
    return str(role)


async def make_user(db: AsyncEngine, http: httpx.AsyncClient, role: str) -> User:
    email = unique_email(role)
    await accounts.create_user(db, email, hash_password(PASSWORD), role.title(), role)
    return await login(http, email)


async def refresh(http: httpx.AsyncClient, token: str) -> httpx.Response:
    return await http.post("/auth/refresh", json={"refresh_token": token})


# ---------------------------------------------------------------- register


async def test_register_creates_a_customer_and_returns_a_token_pair(
    http: httpx.AsyncClient,
) -> None:
    email = unique_email("reg")
    r = await http.post(
        "/auth/register", json={"email": email, "password": PASSWORD, "name": "Ann"}
    )
    assert r.status_code == 201, r.text
    body = r.json()
    assert set(body) >= {"user", "access_token", "refresh_token", "token_type", "expires_in"}
    assert body["user"]["email"] == email
    assert body["user"]["name"] == "Ann"
    assert body["user"]["role"] == "customer"
    uuid.UUID(body["user"]["id"])
    assert body["token_type"] == "bearer"
    assert body["expires_in"] == 15 * 60
    assert body["access_token"] and body["refresh_token"]
    assert body["access_token"] != body["refresh_token"]

    me = await http.get("/auth/me", headers=bearer(body["access_token"]))
    assert me.status_code == 200, me.text
    assert me.json() == {
        "id": body["user"]["id"],
        "email": email,
        "name": "Ann",
        "role": "customer",
    }


async def test_register_with_a_taken_email_in_any_case_is_409_and_changes_nothing(
    http: httpx.AsyncClient, db: AsyncEngine
) -> None:
    local = f"dup-{uuid.uuid4().hex[:10]}"
    email = f"{local}@example.com"
    first = await http.post(
        "/auth/register", json={"email": email, "password": PASSWORD, "name": "First"}
    )
    assert first.status_code == 201, first.text
    user_id = first.json()["user"]["id"]

    for variant in (email, f"{local.upper()}@EXAMPLE.COM", f"{local.title()}@Example.com"):
        r = await http.post(
            "/auth/register",
            json={"email": variant, "password": "another password!", "name": "Second"},
        )
        assert_problem(r, 409, "email_taken")

    assert await users_with_email(db, email) == 1
    # The first account is untouched: its password and name still stand.
    wrong = await http.post("/auth/login", json={"email": email, "password": "another password!"})
    assert_problem(wrong, 401, "invalid_credentials")
    again = await login(http, email)
    assert again.id == user_id
    me = await http.get("/auth/me", headers=again.auth)
    assert me.json()["name"] == "First"


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"password": "short"}, "password"),
        ({"email": "not-an-email"}, "email"),
        ({"role": "admin"}, "role"),
        ({"name": None}, "name"),
    ],
    ids=["short_password", "bad_email", "extra_field", "missing_field"],
)
async def test_register_with_a_bad_body_is_422_naming_the_field_and_creates_nothing(
    http: httpx.AsyncClient, db: AsyncEngine, change: dict[str, Any], field: str
) -> None:
    email = unique_email("bad")
    body: dict[str, Any] = {"email": email, "password": PASSWORD, "name": "Bad", **change}
    body = {k: v for k, v in body.items() if v is not None}
    r = await http.post("/auth/register", json=body)
    problem = assert_problem(r, 422, "validation_error")
    assert isinstance(problem["errors"], list) and problem["errors"]
    assert field in [e["field"] for e in problem["errors"]], problem["errors"]
    assert all(e["message"] for e in problem["errors"])
    assert await users_with_email(db, email) == 0


async def test_register_with_invalid_json_is_400_invalid_json(
    http: httpx.AsyncClient, db: AsyncEngine
) -> None:
    email = unique_email("json")
    r = await http.post(
        "/auth/register",
        content=f'{{"email": "{email}", "password": '.encode(),
        headers={"Content-Type": "application/json"},
    )
    assert_problem(r, 400, "invalid_json")
    assert await users_with_email(db, email) == 0


async def test_passwords_are_stored_argon2_hashed(http: httpx.AsyncClient, db: AsyncEngine) -> None:
    user = await register(http, "hash")
    async with db.connect() as conn:
        stored = await conn.scalar(
            select(UserRow.password_hash).where(UserRow.id == uuid.UUID(user.id))
        )
    assert stored is not None
    assert stored.startswith("$argon2"), stored
    assert PASSWORD not in stored


# ---------------------------------------------------------------- login and /auth/me


async def test_login_with_the_right_password_returns_a_working_token_pair(
    http: httpx.AsyncClient,
) -> None:
    user = await register(http, "login")
    r = await http.post("/auth/login", json={"email": user.email, "password": PASSWORD})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["user"]["id"] == user.id
    assert body["token_type"] == "bearer"
    assert body["refresh_token"] != user.refresh  # a new session
    me = await http.get("/auth/me", headers=bearer(body["access_token"]))
    assert me.status_code == 200 and me.json()["id"] == user.id

    # The email is matched without regard to case.
    upper = await http.post("/auth/login", json={"email": user.email.upper(), "password": PASSWORD})
    assert upper.status_code == 200, upper.text
    assert upper.json()["user"]["id"] == user.id


async def test_wrong_password_and_unknown_email_are_the_same_401_invalid_credentials(
    http: httpx.AsyncClient,
) -> None:
    user = await register(http, "wrongpw")
    wrong = await http.post("/auth/login", json={"email": user.email, "password": "not it at all"})
    unknown = await http.post(
        "/auth/login", json={"email": unique_email("nobody"), "password": PASSWORD}
    )
    wrong_body = assert_problem(wrong, 401, "invalid_credentials")
    unknown_body = assert_problem(unknown, 401, "invalid_credentials")
    assert wrong_body == unknown_body  # nothing tells which emails have accounts
    assert "access_token" not in wrong_body


async def test_me_returns_the_caller(http: httpx.AsyncClient) -> None:
    user = await register(http, "me")
    r = await http.get("/auth/me", headers=user.auth)
    assert r.status_code == 200, r.text
    assert r.json() == {"id": user.id, "email": user.email, "name": "Me", "role": "customer"}


def _b64(data: dict[str, Any]) -> str:
    raw = json.dumps(data, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _claims(user: User, role: str = "customer") -> dict[str, Any]:
    now = int(time.time())
    return {"sub": user.id, "role": role, "iat": now, "exp": now + 600, "iss": ISSUER}


BAD_TOKENS: dict[str, Callable[[FastAPI, User], dict[str, str]]] = {
    "no_token": lambda app, user: {},
    "not_bearer": lambda app, user: {"Authorization": f"Basic {user.access}"},
    "empty_bearer": lambda app, user: {"Authorization": "Bearer "},
    "malformed": lambda app, user: bearer("not.a.jwt"),
    "garbage": lambda app, user: bearer("garbage"),
    "other_secret": lambda app, user: bearer(
        jwt.encode(_claims(user, "admin"), "a-secret-that-is-not-the-apps-" * 2, algorithm="HS256")
    ),
    "expired": lambda app, user: bearer(
        issue_access_token(app.state.jwt_secret, uuid.UUID(user.id), "customer", ttl_s=-10)
    ),
    "alg_none": lambda app, user: bearer(
        f"{_b64({'alg': 'none', 'typ': 'JWT'})}.{_b64(_claims(user, 'admin'))}."
    ),
    "wrong_issuer": lambda app, user: bearer(
        jwt.encode(
            {**_claims(user), "iss": "someone-else"}, app.state.jwt_secret, algorithm="HS256"
        )
    ),
    "tampered_role": lambda app, user: bearer(
        ".".join(
            [
                user.access.split(".")[0],
                _b64(
                    {
                        **jwt.decode(user.access, options={"verify_signature": False}),
                        "role": "admin",
                    }
                ),
                user.access.split(".")[2],
            ]
        )
    ),
}


@pytest.mark.parametrize("kind", list(BAD_TOKENS))
async def test_me_rejects_a_missing_or_unusable_access_token_with_401_invalid_token(
    app: FastAPI, http: httpx.AsyncClient, kind: str
) -> None:
    user = await register(http, "tok")
    r = await http.get("/auth/me", headers=BAD_TOKENS[kind](app, user))
    assert_problem(r, 401, "invalid_token")
    assert r.headers.get("www-authenticate", "").startswith("Bearer"), r.headers
    # The same user's real token still works: the rejection was about the token.
    assert (await http.get("/auth/me", headers=user.auth)).status_code == 200


async def test_an_admin_only_route_rejects_an_alg_none_admin_token(
    http: httpx.AsyncClient,
) -> None:
    user = await register(http, "forge")
    forged = f"{_b64({'alg': 'none', 'typ': 'JWT'})}.{_b64(_claims(user, 'admin'))}."
    r = await http.get("/admin/organizer-applications", headers=bearer(forged))
    assert_problem(r, 401, "invalid_token")


# ---------------------------------------------------------------- refresh rotation


async def test_refresh_returns_a_new_pair_and_the_old_refresh_token_stops_working(
    http: httpx.AsyncClient,
) -> None:
    user = await register(http, "rot")
    r = await refresh(http, user.refresh)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["refresh_token"] != user.refresh
    assert body["access_token"] != user.access
    assert body["user"]["id"] == user.id
    me = await http.get("/auth/me", headers=bearer(body["access_token"]))
    assert me.status_code == 200 and me.json()["id"] == user.id

    assert_problem(await refresh(http, user.refresh), 401, "refresh_token_reused")


async def test_unknown_refresh_token_is_401_invalid_token(http: httpx.AsyncClient) -> None:
    assert_problem(await refresh(http, "no-such-refresh-token"), 401, "invalid_token")


async def test_reused_refresh_token_revokes_the_whole_family(http: httpx.AsyncClient) -> None:
    user = await register(http, "reuse")
    other_session = await login(http, user.email)  # a second, independent family

    r2 = await refresh(http, user.refresh)
    assert r2.status_code == 200, r2.text
    token2 = r2.json()["refresh_token"]
    r3 = await refresh(http, token2)
    assert r3.status_code == 200, r3.text
    newest = r3.json()["refresh_token"]

    # Someone presents a token that was already rotated (a stolen copy).
    assert_problem(await refresh(http, user.refresh), 401, "refresh_token_reused")
    # The whole family is revoked: even its newest token no longer works.
    assert_problem(await refresh(http, newest), 401, "invalid_token")
    assert_problem(await refresh(http, token2), 401, "invalid_token")

    # Another session of the same user keeps working.
    r = await refresh(http, other_session.refresh)
    assert r.status_code == 200, r.text
    assert r.json()["user"]["id"] == user.id


async def test_logout_revokes_the_session_and_only_that_session(
    http: httpx.AsyncClient,
) -> None:
    user = await register(http, "logout")
    other_session = await login(http, user.email)

    r = await http.post("/auth/logout", json={"refresh_token": user.refresh}, headers=user.auth)
    assert r.status_code == 204, r.text
    assert r.content == b""
    assert_problem(await refresh(http, user.refresh), 401, "invalid_token")

    kept = await refresh(http, other_session.refresh)
    assert kept.status_code == 200, kept.text


async def test_logout_with_an_older_token_of_the_session_revokes_its_newest_token(
    http: httpx.AsyncClient,
) -> None:
    user = await register(http, "logout2")
    r = await refresh(http, user.refresh)
    assert r.status_code == 200, r.text
    newest = r.json()["refresh_token"]
    out = await http.post("/auth/logout", json={"refresh_token": user.refresh}, headers=user.auth)
    assert out.status_code == 204, out.text
    assert_problem(await refresh(http, newest), 401, "invalid_token")


async def test_logout_needs_an_access_token(http: httpx.AsyncClient) -> None:
    user = await register(http, "logout3")
    r = await http.post("/auth/logout", json={"refresh_token": user.refresh})
    assert_problem(r, 401, "invalid_token")
    assert r.headers.get("www-authenticate", "").startswith("Bearer")
    assert (await refresh(http, user.refresh)).status_code == 200


async def test_logout_with_someone_elses_refresh_token_does_not_revoke_it(
    http: httpx.AsyncClient,
) -> None:
    mallory = await register(http, "mallory")
    victim = await register(http, "victim")
    r = await http.post(
        "/auth/logout", json={"refresh_token": victim.refresh}, headers=mallory.auth
    )
    assert r.status_code in (204, 404), r.text
    kept = await refresh(http, victim.refresh)
    assert kept.status_code == 200, kept.text
    assert kept.json()["user"]["id"] == victim.id
    # Mallory's own session was not touched either.
    assert (await refresh(http, mallory.refresh)).status_code == 200


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
    assert_problem(await _apply(http, user, "Other Org"), 409, "application_exists")
    admin = await make_user(db, http, "admin")
    r = await http.get("/admin/organizer-applications", headers=admin.auth)
    assert [a["id"] for a in r.json() if a["user_id"] == user.id] == [first.json()["id"]]


@pytest.mark.parametrize("role", ["organizer", "admin"])
async def test_organizers_and_admins_cannot_apply(
    http: httpx.AsyncClient, db: AsyncEngine, role: str
) -> None:
    user = await make_user(db, http, role)
    assert_problem(await _apply(http, user), 409, "not_a_customer")
    admin = await make_user(db, http, "admin")
    r = await http.get("/admin/organizer-applications", headers=admin.auth)
    assert all(a["user_id"] != user.id for a in r.json())


async def test_applying_needs_an_access_token(http: httpx.AsyncClient) -> None:
    r = await http.post("/organizer-applications", json={"organization": "Anon"})
    assert_problem(r, 401, "invalid_token")


@pytest.mark.parametrize("role", ["customer", "organizer"])
async def test_non_admins_cannot_list_or_decide_applications(
    http: httpx.AsyncClient, db: AsyncEngine, role: str
) -> None:
    applicant = await register(http, "applicant")
    application = (await _apply(http, applicant)).json()
    caller = await make_user(db, http, role)

    assert_problem(
        await http.get("/admin/organizer-applications", headers=caller.auth), 403, "forbidden"
    )
    for action in ("approve", "reject"):
        r = await http.post(
            f"/admin/organizer-applications/{application['id']}/{action}", headers=caller.auth
        )
        assert_problem(r, 403, "forbidden")

    admin = await make_user(db, http, "admin")
    assert (await _listed(http, admin, application["id"]))["status"] == "pending"
    assert await role_in_db(db, applicant.id) == "customer"


async def test_approval_makes_the_applicant_an_organizer_from_their_next_token(
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
    assert_problem(await http.post("/events", json=EVENT, headers=applicant.auth), 403, "forbidden")

    r = await http.post(
        f"/admin/organizer-applications/{application['id']}/approve", headers=admin.auth
    )
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "approved"
    assert r.json()["decided_at"] is not None
    assert await role_in_db(db, applicant.id) == "organizer"

    # Their current access token still says customer; a refreshed one says organizer.
    rotated = await refresh(http, applicant.refresh)
    assert rotated.status_code == 200, rotated.text
    assert rotated.json()["user"]["role"] == "organizer"
    new_auth = bearer(rotated.json()["access_token"])
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
        assert_problem(again, 409, "application_decided")
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
    assert_problem(again, 409, "application_decided")
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
        assert_problem(r, 404, "not_found")


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
    rotated = await refresh(http, user.refresh)
    assert rotated.json()["user"]["role"] == "organizer"
    created = await http.post("/events", json=EVENT, headers=bearer(rotated.json()["access_token"]))
    assert created.status_code == 201, created.text


@pytest.mark.parametrize("role", ["customer", "organizer"])
async def test_non_admins_cannot_set_roles(
    http: httpx.AsyncClient, db: AsyncEngine, role: str
) -> None:
    caller = await make_user(db, http, role)
    r = await http.patch(
        f"/admin/users/{caller.id}/role", json={"role": "admin"}, headers=caller.auth
    )
    assert_problem(r, 403, "forbidden")
    assert await role_in_db(db, caller.id) == role


async def test_setting_an_invalid_role_is_422_and_changes_nothing(
    http: httpx.AsyncClient, db: AsyncEngine
) -> None:
    admin = await make_user(db, http, "admin")
    user = await register(http, "badrole")
    r = await http.patch(
        f"/admin/users/{user.id}/role", json={"role": "superuser"}, headers=admin.auth
    )
    problem = assert_problem(r, 422, "validation_error")
    assert "role" in [e["field"] for e in problem["errors"]]
    assert await role_in_db(db, user.id) == "customer"


async def test_setting_the_role_of_an_unknown_user_is_404(
    http: httpx.AsyncClient, db: AsyncEngine
) -> None:
    admin = await make_user(db, http, "admin")
    r = await http.patch(
        f"/admin/users/{uuid.uuid4()}/role", json={"role": "organizer"}, headers=admin.auth
    )
    assert_problem(r, 404, "not_found")


# ---------------------------------------------------------------- rate limits


async def test_the_fourth_login_for_one_email_from_one_client_is_rate_limited(
    redis_url: str, database_url: str, ray_local: str, db: AsyncEngine, tmp_path: Path
) -> None:
    limits = "login=3/minute,holds=20/minute,global=1000/minute"
    email, other_email = unique_email("limited"), unique_email("notlimited")
    for each in (email, other_email):
        await accounts.create_user(db, each, hash_password(PASSWORD), "L", "customer")
    async with running_app(redis_url, database_url, tmp_path, rate_limits=limits) as (app, _):
        address = random_client()
        async with client_for(app, address) as http:
            for _ in range(3):
                ok = await http.post("/auth/login", json={"email": email, "password": PASSWORD})
                assert ok.status_code == 200, ok.text
            r = await http.post("/auth/login", json={"email": email, "password": PASSWORD})
            body = assert_problem(r, 429, "rate_limited")
            assert "access_token" not in body
            retry_after = int(r.headers["retry-after"])
            assert 1 <= retry_after <= 60
            assert isinstance(body["retry_after_s"], int) and 1 <= body["retry_after_s"] <= 60

            # The limit is per email: another account from the same client logs in.
            other = await http.post(
                "/auth/login", json={"email": other_email, "password": PASSWORD}
            )
            assert other.status_code == 200, other.text
            # The email in another case is the same email.
            upper = await http.post(
                "/auth/login", json={"email": email.upper(), "password": PASSWORD}
            )
            assert_problem(upper, 429, "rate_limited")


async def test_the_global_limit_refuses_the_sixth_request_but_never_healthz(
    redis_url: str, database_url: str, ray_local: str, tmp_path: Path
) -> None:
    async with running_app(redis_url, database_url, tmp_path, rate_limits="global=5/minute") as (
        app,
        _,
    ):
        address = random_client()
        async with client_for(app, address) as http:
            for _ in range(5):
                ok = await http.get("/events")
                assert ok.status_code == 200, ok.text
            r = await http.get("/events")
            body = assert_problem(r, 429, "rate_limited")
            assert int(r.headers["retry-after"]) >= 1
            assert body["retry_after_s"] >= 1
            # Other routes share the one per-address limit.
            assert_problem(await http.get("/auth/me"), 429, "rate_limited")
            # Probes are never limited.
            for _ in range(10):
                assert (await http.get("/healthz")).status_code == 200
        # Another client address has its own budget.
        other = random_client()
        while other[0] == address[0]:
            other = random_client()
        async with client_for(app, other) as http:
            assert (await http.get("/events")).status_code == 200


# ---------------------------------------------------------------- body size and request ids


async def test_a_body_over_max_body_bytes_is_413_and_creates_nothing(
    redis_url: str, database_url: str, ray_local: str, db: AsyncEngine, tmp_path: Path
) -> None:
    async with running_app(redis_url, database_url, tmp_path, max_body_bytes=1024) as (_, http):
        email = unique_email("big")
        big = {"email": email, "password": PASSWORD, "name": "N" * 2000}
        r = await http.post("/auth/register", json=big)
        assert_problem(r, 413, "body_too_large")
        assert await users_with_email(db, email) == 0
        assert r.headers.get("x-request-id")

        # A body under the limit is accepted by the same app.
        small = await http.post(
            "/auth/register", json={"email": email, "password": PASSWORD, "name": "Small"}
        )
        assert small.status_code == 201, small.text


async def test_a_chunked_body_over_max_body_bytes_is_413(
    redis_url: str, database_url: str, ray_local: str, db: AsyncEngine, tmp_path: Path
) -> None:
    """Without Content-Length the limit is counted as the body arrives."""
    async with running_app(redis_url, database_url, tmp_path, max_body_bytes=1024) as (_, http):
        email = unique_email("chunked")
        payload = json.dumps({"email": email, "password": PASSWORD, "name": "N" * 2000}).encode()

        async def chunks() -> AsyncIterator[bytes]:
            for i in range(0, len(payload), 256):
                yield payload[i : i + 256]

        r = await http.post(
            "/auth/register", content=chunks(), headers={"Content-Type": "application/json"}
        )
        assert "content-length" not in r.request.headers
        assert_problem(r, 413, "body_too_large")
        assert await users_with_email(db, email) == 0


async def test_x_request_id_is_echoed_and_generated_when_absent(http: httpx.AsyncClient) -> None:
    sent = f"req-{uuid.uuid4().hex}"
    r = await http.get("/healthz", headers={"X-Request-ID": sent})
    assert r.status_code == 200
    assert r.headers["x-request-id"] == sent

    # Echoed on error responses too.
    err = await http.get("/auth/me", headers={"X-Request-ID": sent + "-err"})
    assert_problem(err, 401, "invalid_token")
    assert err.headers["x-request-id"] == sent + "-err"

    first = (await http.get("/healthz")).headers.get("x-request-id")
    second = (await http.get("/healthz")).headers.get("x-request-id")
    assert first and second and first != second
    assert len(first) >= 16
