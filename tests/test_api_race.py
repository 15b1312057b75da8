"""500 buyers on their own HTTP connections race for an event's last 10 seats.

Against `onsale serve` with two workers (so two engine clients coalesce
separately into the one actor), exactly 10 holds win and every other answer is
a 409. The negative control races the same clients, the same way, against a
hold route built on a read-then-write check (tests/naive_inventory.py): it
hands out more than 10 holds, so this race can see an oversell.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine

from api.security import issue_access_token
from engine.client import EngineClient
from engine.model import SeatedSection
from tests import naive_inventory
from tests.api_support import PASSWORD, served_in_process, unique_email
from tests.conftest import LiveApi

pytestmark = pytest.mark.slow

RACERS = 500
LAST_SEATS = [f"A-10-{n}" for n in range(1, 11)]


def _token(api: LiveApi, role: str = "customer") -> str:
    return issue_access_token(api.jwt_secret, uuid.uuid4(), role, 600)


async def _race(
    base_url: str,
    path: Callable[[int], str],
    body: Callable[[int], dict[str, Any]],
    tokens: list[str],
) -> list[httpx.Response]:
    """Opens every racer's own connection first, then fires all at once."""
    clients = [
        httpx.AsyncClient(base_url=base_url, timeout=60, limits=httpx.Limits(max_connections=1))
        for _ in tokens
    ]
    try:
        await asyncio.gather(*(c.get("/healthz") for c in clients))  # connect before the start
        start = asyncio.Event()

        async def racer(i: int) -> httpx.Response:
            await start.wait()
            return await clients[i].post(
                path(i), json=body(i), headers={"Authorization": f"Bearer {tokens[i]}"}
            )

        tasks = [asyncio.ensure_future(racer(i)) for i in range(len(tokens))]
        await asyncio.sleep(0)  # every racer is now parked on the start event
        start.set()
        return list(await asyncio.gather(*tasks))
    finally:
        await asyncio.gather(*(c.aclose() for c in clients))


async def _organizer(api: LiveApi, db: AsyncEngine) -> dict[str, str]:
    from api.security import hash_password
    from persistence import accounts

    account = await accounts.create_user(
        db, unique_email("organizer"), hash_password(PASSWORD), "Organizer", "organizer"
    )
    token = issue_access_token(api.jwt_secret, account.id, "organizer", 600)
    return {"Authorization": f"Bearer {token}"}


async def test_500_buyers_race_for_the_last_10_seats_and_exactly_10_win(
    live_api: LiveApi, db: AsyncEngine
) -> None:
    organizer = await _organizer(live_api, db)
    async with httpx.AsyncClient(base_url=live_api.base_url, timeout=30) as http:
        event = (
            await http.post(
                "/events",
                # One early buyer takes 90 seats: no per-customer limit or cap.
                json={"name": "Last seats", "venue": "Hall", "starts_at": "2027-06-01T20:00:00Z",
                      "currency": "EUR", "max_tickets_per_customer": 0,
                      "max_held_per_customer": 0},
                headers=organizer,
            )
        ).json()  # fmt: skip
        seated = {"kind": "seated", "code": "A", "name": "Stalls", "price_cents": 5000,
                  "rows": 10, "seats_per_row": 10}  # fmt: skip
        assert (
            await http.post(f"/events/{event['id']}/sections", json=seated, headers=organizer)
        ).status_code == 201
        assert (
            await http.post(f"/events/{event['id']}/publish", headers=organizer)
        ).status_code == 200
        early = {"Authorization": f"Bearer {_token(live_api)}"}
        first_90 = [f"A-{r}-{s}" for r in range(1, 10) for s in range(1, 11)]
        r = await http.post(f"/events/{event['id']}/holds", json={"seats": first_90}, headers=early)
        assert r.status_code == 201, r.text

        answers = await _race(
            live_api.base_url,
            lambda i: f"/events/{event['id']}/holds",
            lambda i: {"seats": [LAST_SEATS[i % 10]]},  # 50 racers per seat
            [_token(live_api) for _ in range(RACERS)],
        )
        statuses = Counter(a.status_code for a in answers)
        assert statuses == {201: 10, 409: RACERS - 10}, statuses
        codes = Counter(a.json()["code"] for a in answers if a.status_code == 409)
        assert set(codes) <= {"seats_unavailable", "sold_out"}, codes
        won = sorted(a.json()["seats"][0] for a in answers if a.status_code == 201)
        assert won == sorted(LAST_SEATS)  # each seat exactly once
        availability = (await http.get(f"/events/{event['id']}/availability")).json()
        assert (
            availability["sections"][0] | {"held": 100, "available": 0, "sold": 0}
            == availability["sections"][0]
        )


def _naive_app(redis: Redis) -> FastAPI:
    """The same route shape with the check and the write in separate round trips."""
    app = FastAPI()

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.post("/events/{event_id}/holds", status_code=201)
    async def hold(event_id: str, body: dict[str, Any]) -> Any:
        seat = body["seats"][0]
        if await naive_inventory.hold_seat(redis, event_id, seat, uuid.uuid4().hex):
            return {"seats": [seat]}
        from fastapi.responses import JSONResponse

        return JSONResponse({"code": "seats_unavailable"}, status_code=409)

    return app


async def _serve(app: FastAPI, run: Callable[[str], Awaitable[Any]]) -> Any:
    async with served_in_process(app) as base_url:
        return await run(base_url)


async def test_negative_control_a_read_then_write_hold_route_oversells_under_the_same_race(
    client: EngineClient, redis: Redis, live_api: LiveApi
) -> None:
    event_id = uuid.uuid4().hex[:12]
    await client.load_inventory(event_id, [SeatedSection("A", rows=10, seats_per_row=10)])
    tokens = [_token(live_api) for _ in range(RACERS)]
    answers = await _serve(
        _naive_app(redis),
        lambda base: _race(
            base,
            lambda i: f"/events/{event_id}/holds",
            lambda i: {"seats": [LAST_SEATS[i % 10]]},
            tokens,
        ),
    )
    granted = sum(1 for a in answers if a.status_code == 201)
    assert granted > 10, f"the naive route granted {granted} holds for 10 seats"
