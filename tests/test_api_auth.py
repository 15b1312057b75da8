"""Accounts and sessions over HTTP against the real app (real Redis, Postgres
and Ray): register, login, /auth/me, rotating refresh tokens and their
families, logout."""

from __future__ import annotations

import base64
import json
import time
import uuid
from collections.abc import Callable
from typing import Any

import httpx
import jwt
import pytest
from fastapi import FastAPI
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from api.security import ISSUER, issue_access_token
from persistence.models import User as UserRow
from tests.api_http import (
    bearer,
    problem,
    refresh,
    users_with_email,
)
from tests.api_support import (
    PASSWORD,
    User,
    login,
    register,
    unique_email,
)

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
        problem(r, 409, "email_taken")

    assert await users_with_email(db, email) == 1
    # The first account is untouched: its password and name still stand.
    wrong = await http.post("/auth/login", json={"email": email, "password": "another password!"})
    problem(wrong, 401, "invalid_credentials")
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
    refusal = problem(r, 422, "validation_error")
    assert isinstance(refusal["errors"], list) and refusal["errors"]
    assert field in [e["field"] for e in refusal["errors"]], refusal["errors"]
    assert all(e["message"] for e in refusal["errors"])
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
    problem(r, 400, "invalid_json")
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
    wrong_body = problem(wrong, 401, "invalid_credentials")
    unknown_body = problem(unknown, 401, "invalid_credentials")
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
    problem(r, 401, "invalid_token")
    assert r.headers.get("www-authenticate", "").startswith("Bearer"), r.headers
    # The same user's real token still works: the rejection was about the token.
    assert (await http.get("/auth/me", headers=user.auth)).status_code == 200


async def test_an_admin_only_route_rejects_an_alg_none_admin_token(
    http: httpx.AsyncClient,
) -> None:
    user = await register(http, "forge")
    forged = f"{_b64({'alg': 'none', 'typ': 'JWT'})}.{_b64(_claims(user, 'admin'))}."
    r = await http.get("/admin/organizer-applications", headers=bearer(forged))
    problem(r, 401, "invalid_token")


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

    problem(await refresh(http, user.refresh), 401, "refresh_token_reused")


async def test_unknown_refresh_token_is_401_invalid_token(http: httpx.AsyncClient) -> None:
    problem(await refresh(http, "no-such-refresh-token"), 401, "invalid_token")


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
    problem(await refresh(http, user.refresh), 401, "refresh_token_reused")
    # The whole family is revoked: even its newest token no longer works.
    problem(await refresh(http, newest), 401, "invalid_token")
    problem(await refresh(http, token2), 401, "invalid_token")

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
    problem(await refresh(http, user.refresh), 401, "invalid_token")

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
    problem(await refresh(http, newest), 401, "invalid_token")


async def test_logout_needs_an_access_token(http: httpx.AsyncClient) -> None:
    user = await register(http, "logout3")
    r = await http.post("/auth/logout", json={"refresh_token": user.refresh})
    problem(r, 401, "invalid_token")
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
