"""What the HTTP API tests share: users, an event on sale, and helpers that
check a refusal's problem+json and read the inventory back.

The fixtures run against the session's in-process app (``inproc``); users are
minted (:func:`tests.api_support.minted`), so no fixture pays for argon2.
Registered as a pytest plugin by tests/conftest.py.
"""

from __future__ import annotations

import functools
import random
import uuid
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from fastapi import FastAPI
from redis.asyncio import Redis
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from persistence import accounts
from persistence.models import User as UserRow
from persistence.writer import OutboxWriter
from sales.vocabulary import Role
from tests.api_support import (
    RunningApi,
    User,
    login,
    minted,
    on_sale_event,
    password_hash,
    running_api,
    unique_email,
)

EVENT = {
    "name": "Night Concert",
    "venue": "Hall",
    "starts_at": "2027-06-01T20:00:00Z",
    "currency": "EUR",
}


# ---------------------------------------------------------------- fixtures


@pytest.fixture
def http(inproc: RunningApi) -> httpx.AsyncClient:
    return inproc.http


@pytest.fixture
def app(inproc: RunningApi) -> FastAPI:
    assert inproc.app is not None
    return inproc.app


ApiWith = Callable[..., AbstractAsyncContextManager[RunningApi]]


@pytest.fixture
def api_with(
    redis_url: str, database_url: str, ray_local: str, db: AsyncEngine, tmp_path: Path
) -> ApiWith:
    """The app in this process with settings of its own (rate limits, body
    limits): ``async with api_with(max_body_bytes=1024) as api``."""
    return functools.partial(
        running_api, "asgi", redis_url=redis_url, database_url=database_url, data_dir=tmp_path
    )


@pytest.fixture
async def organizer(db: AsyncEngine, inproc: RunningApi) -> User:
    return await minted(db, inproc, Role.ORGANIZER)


@pytest.fixture
async def rival(db: AsyncEngine, inproc: RunningApi) -> User:
    """Another organizer."""
    return await minted(db, inproc, Role.ORGANIZER)


@pytest.fixture
async def admin(db: AsyncEngine, inproc: RunningApi) -> User:
    return await minted(db, inproc, Role.ADMIN)


@pytest.fixture
async def buyer(db: AsyncEngine, inproc: RunningApi) -> User:
    return await minted(db, inproc)


@pytest.fixture
async def other(db: AsyncEngine, inproc: RunningApi) -> User:
    return await minted(db, inproc)


@pytest.fixture
async def event(http: httpx.AsyncClient, organizer: User) -> dict[str, Any]:
    """On sale: A (seated, 3 x 4, 4500) and FLOOR (general, 20, 3000)."""
    return await on_sale_event(http, organizer)


@pytest.fixture(scope="module")
async def untouched_event(db: AsyncEngine, inproc: RunningApi) -> dict[str, Any]:
    """Like ``event``, shared by a module's refusal tests, each of which
    checks that it changed nothing (a new event costs a new actor process)."""
    return await on_sale_event(inproc.http, await minted(db, inproc, Role.ORGANIZER))


@pytest.fixture
def written(redis: Redis, db: AsyncEngine) -> Callable[[], Awaitable[int]]:
    """Runs the write-behind now (the in-process app has no writer beside
    it): what the engine has recorded reaches Postgres."""
    return OutboxWriter(redis, db).drain


# ---------------------------------------------------------------- helpers


def problem(r: httpx.Response, status: int, code: str) -> dict[str, Any]:
    """The problem+json body of a refusal with this status and code."""
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/problem+json"), r.headers
    body = r.json()
    assert body["code"] == code, body
    assert body["status"] == status
    assert body["type"].endswith(f"/{code}")
    assert body["title"] and body["detail"]
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


# ---------------------------------------------------------------- accounts


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
    """An account with ``role``, logged in through the API (a real session)."""
    email = unique_email(role)
    await accounts.create_user(db, email, password_hash(), role.title(), Role(role))
    return await login(http, email)


async def refresh(http: httpx.AsyncClient, token: str) -> httpx.Response:
    return await http.post("/auth/refresh", json={"refresh_token": token})
