"""Driving the real app (real Redis, Postgres and Ray) over HTTP in tests.

One way to run the API, :func:`running_api`, in three variants:

- ``asgi``: the app in this process, called through httpx's ASGI transport
  (no sockets; the fastest, for most API tests);
- ``uvicorn``: the app in this process under uvicorn on a real socket,
  configured as `onsale serve` configures it (WebSockets, keep-alive);
- ``serve``: `onsale serve --workers N` in a subprocess, optionally with an
  `onsale writer` beside it and localstripe as its Stripe, as users run it.

Users are minted, not registered: an account row made straight in Postgres
(with one argon2 hash computed once) and an access token signed with the
app's own key, so a test pays no password hashing it is not about.
"""

from __future__ import annotations

import asyncio
import functools
import os
import signal
import socket
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import httpx
import uvicorn
from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncEngine

from api.app import create_app
from api.security import hash_password, issue_access_token
from api.settings import Settings
from api.supervisor import uvicorn_options
from persistence import accounts
from persistence.embedded import free_port
from sales.vocabulary import Role
from tests.sales import wait_for

PASSWORD = "correct horse battery staple"
ONSALE = str(Path(sys.executable).with_name("onsale"))


@functools.cache
def password_hash() -> str:
    """PASSWORD's argon2 hash, computed once for every minted account."""
    return hash_password(PASSWORD)


@dataclass
class RunningApi:
    base_url: str
    http: httpx.AsyncClient  # talks to this API; shared, keep-alive
    jwt_secret: str
    data_dir: Path
    app: FastAPI | None = None  # when it runs in this process
    log: Path | None = None  # a subprocess's output
    env: dict[str, str] = field(default_factory=dict)  # a subprocess's environment

    def token(self, user_id: uuid.UUID, role: Role = Role.CUSTOMER, ttl_s: int = 3600) -> str:
        return issue_access_token(self.jwt_secret, user_id, role, ttl_s)

    def bearer(self, user_id: uuid.UUID, role: Role = Role.CUSTOMER) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token(user_id, role)}"}


@dataclass
class Served:
    """A subprocess `onsale serve` and what it runs on."""

    workers: int = 2
    writer: bool = False
    reconcile: bool = False  # `onsale reconcile` beside it (needs Stripe settings)
    port: int | None = None  # None: a free one
    env: dict[str, str] = field(default_factory=dict)  # beside (or instead of) os.environ
    inherit_env: bool = True


Kind = Literal["asgi", "uvicorn", "serve"]


@asynccontextmanager
async def running_api(
    kind: Kind,
    *,
    redis_url: str,
    database_url: str,
    data_dir: Path,
    served: Served | None = None,
    **settings: Any,
) -> AsyncIterator[RunningApi]:
    """The API on these servers until the block ends. ``settings`` override
    :class:`api.settings.Settings` (rate limits are off unless given)."""
    settings.setdefault("rate_limits", "off")
    if kind == "serve":
        served = served or Served()
        async with _subprocess(redis_url, database_url, data_dir, served, settings) as api:
            yield api
        return
    app_settings = Settings(
        redis_url=redis_url, database_url=database_url, data_dir=data_dir, **settings
    )
    app = create_app(app_settings)
    if kind == "asgi":
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app, client=("203.0.113.7", 40000))
            base_url = "http://onsale.test"
            async with httpx.AsyncClient(transport=transport, base_url=base_url) as http:
                yield RunningApi(base_url, http, app.state.jwt_secret, data_dir, app)
        return
    options = uvicorn_options(app_settings)
    async with served_in_process(app, options) as base_url:  # uvicorn runs the lifespan
        async with httpx.AsyncClient(base_url=base_url, timeout=30) as http:
            yield RunningApi(base_url, http, app.state.jwt_secret, data_dir, app)


@asynccontextmanager
async def served_in_process(
    app: FastAPI, config: dict[str, Any] | None = None
) -> AsyncIterator[str]:
    """``app`` under uvicorn in this process on a free port, with `onsale
    serve`'s options (``config`` overrides them); yields its base URL."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    options = {**uvicorn_options(Settings()), **(config or {})}
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", **options))
    serving = asyncio.ensure_future(server.serve(sockets=[sock]))
    try:

        async def started() -> bool:
            return bool(server.started)  # uvicorn offers a flag, not an event: poll it

        await wait_for(started, 60, "the in-process server to start")
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await serving


@asynccontextmanager
async def _subprocess(
    redis_url: str, database_url: str, data_dir: Path, served: Served, settings: dict[str, Any]
) -> AsyncIterator[RunningApi]:
    port = served.port or free_port()
    secret = settings.pop("jwt_secret", None) or uuid.uuid4().hex + uuid.uuid4().hex
    env = {
        **(os.environ if served.inherit_env else {}),
        "ONSALE_REDIS_URL": redis_url,
        "ONSALE_DATABASE_URL": database_url,
        "ONSALE_PORT": str(port),
        "ONSALE_DATA_DIR": str(data_dir),
        "ONSALE_JWT_SECRET": secret,
        "ONSALE_LOG_LEVEL": "WARNING",
        **{f"ONSALE_{k.upper()}": str(v) for k, v in settings.items()},
        **served.env,
    }
    log_path = data_dir / "server.log"
    processes: list[asyncio.subprocess.Process] = []
    with log_path.open("wb") as log:
        commands = [[ONSALE, "serve", "--workers", str(served.workers)]]
        if served.writer:  # confirmed sales reach Postgres, as under `onsale up`
            commands.append([ONSALE, "writer"])
        if served.reconcile:
            commands.append([ONSALE, "reconcile"])
        base_url = f"http://127.0.0.1:{port}"
        try:
            for command in commands:
                processes.append(
                    await asyncio.create_subprocess_exec(
                        *command, env=env, stdout=log, stderr=subprocess.STDOUT
                    )
                )
            async with httpx.AsyncClient(base_url=base_url, timeout=30) as http:

                async def ready() -> bool:
                    assert processes[0].returncode is None, log_path.read_text()[-3000:]
                    try:
                        return (await http.get("/readyz", timeout=2)).status_code == 200
                    except httpx.HTTPError:
                        return False

                await wait_for(ready, 120, "onsale serve to be ready")
                yield RunningApi(base_url, http, secret, data_dir, log=log_path, env=env)
        finally:
            for process in reversed(processes):
                if process.returncode is None:
                    process.send_signal(signal.SIGINT)
            for process in reversed(processes):
                try:
                    await asyncio.wait_for(process.wait(), 30)
                except TimeoutError:
                    process.kill()
                    await process.wait()


# ---------------------------------------------------------------- people


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


async def minted(db: AsyncEngine, api: RunningApi, role: Role = Role.CUSTOMER) -> User:
    """An account made straight in Postgres (as create-admin does) with a
    minted access token and no session: for tests that are not about login."""
    email = unique_email(role)
    account = await accounts.create_user(db, email, password_hash(), role.title(), role)
    return User(str(account.id), email, api.token(account.id, role), "", role)


async def register(http: httpx.AsyncClient, prefix: str = "buyer") -> User:
    """Through the API, with a session: for tests about accounts and tokens."""
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
    """An account made straight in Postgres with ``role``, logged in through
    the API (a real session, refresh token included)."""
    email = unique_email(role)
    await accounts.create_user(db, email, password_hash(), role.title(), Role(role))
    return await login(http, email)


# ---------------------------------------------------------------- events

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
