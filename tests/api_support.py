"""Driving the real app (real Redis, Postgres and Ray) over HTTP in tests."""

from __future__ import annotations

import asyncio
import socket
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncEngine

from api.app import create_app
from api.security import hash_password
from api.settings import Settings
from persistence import accounts
from tests.sales import wait_for

PASSWORD = "correct horse battery staple"


@asynccontextmanager
async def running_app(
    redis_url: str, database_url: str, data_dir: Path, **overrides: Any
) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    settings = Settings(
        redis_url=redis_url,
        database_url=database_url,
        data_dir=data_dir,
        rate_limits=overrides.pop("rate_limits", "off"),
        **overrides,
    )
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, client=("203.0.113.7", 40000))
        async with httpx.AsyncClient(transport=transport, base_url="http://onsale.test") as http:
            yield app, http


@asynccontextmanager
async def served(app: FastAPI, **config: Any) -> AsyncIterator[str]:
    """``app`` under uvicorn in this process on a free port, for real sockets;
    yields its base URL."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False, **config))
    serving = asyncio.ensure_future(server.serve(sockets=[sock]))
    try:

        async def started() -> bool:
            return bool(server.started)  # uvicorn offers a flag, not an event: poll it

        await wait_for(started, 60, "the in-process server to start")
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await serving


@dataclass
class User:
    id: str
    email: str
    access: str
    refresh: str
    role: str

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.access}"}


def unique_email(prefix: str = "buyer") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}@example.com"


async def register(http: httpx.AsyncClient, prefix: str = "buyer") -> User:
    email = unique_email(prefix)
    r = await http.post(
        "/auth/register", json={"email": email, "password": PASSWORD, "name": prefix.title()}
    )
    assert r.status_code == 201, r.text
    body = r.json()
    return User(body["user"]["id"], email, body["access_token"], body["refresh_token"], "customer")


async def login(http: httpx.AsyncClient, email: str) -> User:
    r = await http.post("/auth/login", json={"email": email, "password": PASSWORD})
    assert r.status_code == 200, r.text
    body = r.json()
    return User(
        body["user"]["id"], email, body["access_token"], body["refresh_token"], body["user"]["role"]
    )


async def user_with_role(db: AsyncEngine, http: httpx.AsyncClient, role: str) -> User:
    """An account made straight in Postgres with ``role`` (as create-admin does), logged in."""
    email = unique_email(role)
    await accounts.create_user(db, email, hash_password(PASSWORD), role.title(), role)
    return await login(http, email)


SEATED = {
    "kind": "seated",
    "code": "A",
    "name": "Stalls",
    "price_cents": 4500,
    "rows": 3,
    "seats_per_row": 4,
}
GENERAL = {"kind": "general", "code": "FLOOR", "name": "Floor", "price_cents": 3000, "capacity": 20}


async def on_sale_event(
    http: httpx.AsyncClient,
    organizer: User,
    sections: list[dict[str, Any]] | None = None,
    **fields: Any,
) -> dict[str, Any]:
    body = {
        "name": "Night Concert",
        "venue": "Hall",
        "starts_at": "2027-06-01T20:00:00Z",
        "currency": "EUR",
        **fields,
    }
    r = await http.post("/events", json=body, headers=organizer.auth)
    assert r.status_code == 201, r.text
    event = r.json()
    for section in sections if sections is not None else [SEATED, GENERAL]:
        r = await http.post(f"/events/{event['id']}/sections", json=section, headers=organizer.auth)
        assert r.status_code == 201, r.text
    r = await http.post(f"/events/{event['id']}/publish", headers=organizer.auth)
    assert r.status_code == 200, r.text
    return dict(r.json())
