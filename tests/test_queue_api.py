"""The waiting room through the API: the organizer's settings, joining, one's
place, and holds that need the pass (in-process app, real Redis, Postgres, Ray)."""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import jwt
import pytest
from fastapi import FastAPI

from api.security import issue_queue_pass
from sales.vocabulary import Role
from tests.api_http import counts, problem
from tests.api_support import GENERAL, RunningApi, User, on_sale_event
from tests.sales import wait_for

BIG_FLOOR = {**GENERAL, "capacity": 5000}


def room(opens_at: datetime, **overrides: Any) -> dict[str, Any]:
    return {
        "enabled": True,
        "opens_at": opens_at.isoformat(),
        "admit_per_minute": 60_000,
        "max_active": 10_000,
        "pass_ttl_s": 600,
        **overrides,
    }


def in_an_hour() -> datetime:
    return datetime.now(UTC) + timedelta(hours=1)


def customer(api: RunningApi) -> dict[str, str]:
    """A buyer with a minted token (no account row: holds and the room need none)."""
    return api.bearer(uuid.uuid4(), Role.CUSTOMER)


async def admitted(http: httpx.AsyncClient, event_id: str, who: dict[str, str]) -> dict[str, Any]:
    """Joins, then waits for the admission; returns the answer with the pass."""
    r = await http.post(f"/events/{event_id}/queue/join", headers=who)
    assert r.status_code == 200, r.text
    answer: dict[str, Any] = r.json()

    async def in_() -> bool:
        nonlocal answer
        answer = (await http.get(f"/events/{event_id}/queue/me", headers=who)).json()
        return answer["status"] == "admitted"

    await wait_for(in_, 15, "an admission")
    return answer


async def hold_ga(
    http: httpx.AsyncClient, event_id: str, who: dict[str, str], queue_pass: str | None = None
) -> httpx.Response:
    headers = dict(who)
    if queue_pass is not None:
        headers["Onsale-Queue-Pass"] = queue_pass
    body = {"section": "FLOOR", "quantity": 1}
    return await http.post(f"/events/{event_id}/holds", json=body, headers=headers)


async def test_the_organizer_sets_the_room_up_and_anyone_reads_it(
    http: httpx.AsyncClient, organizer: User, rival: User, inproc: RunningApi
) -> None:
    event = await on_sale_event(http, organizer)
    url = f"/events/{event['id']}/queue"
    problem(await http.get(url), 404, "not_found")  # no room yet
    body = room(in_an_hour())
    problem(await http.put(url, json=body, headers=customer(inproc)), 403, "forbidden")
    problem(await http.put(url, json=body, headers=rival.auth), 404, "not_found")
    for bad in ({"admit_per_minute": 0}, {"pass_ttl_s": 5}, {"max_active": 0}, {"opens_at": "x"}):
        problem(
            await http.put(url, json={**body, **bad}, headers=organizer.auth),
            422,
            "validation_error",
        )
    r = await http.put(url, json={**body, "admit_per_minute": "auto"}, headers=organizer.auth)
    assert r.status_code == 200, r.text
    assert r.json()["state"] == "pre_queue" and r.json()["admit_per_minute"] == "auto"
    public = await http.get(url)
    assert public.status_code == 200
    assert public.json()["waiting"] == 0 and public.json()["state"] == "pre_queue"
    assert public.json()["pre_open_order"] == "random"


async def test_buyers_join_wait_and_hold_only_with_their_own_pass(
    http: httpx.AsyncClient, organizer: User, inproc: RunningApi, app: FastAPI
) -> None:
    event = await on_sale_event(http, organizer, sections=[BIG_FLOOR])
    other_event = await on_sale_event(http, organizer, sections=[BIG_FLOOR])
    url = f"/events/{event['id']}/queue"
    for ev in (event, other_event):
        r = await http.put(
            f"/events/{ev['id']}/queue", json=room(in_an_hour()), headers=organizer.auth
        )
        assert r.status_code == 200, r.text
    alice, bob = customer(inproc), customer(inproc)
    first = (await http.post(f"{url}/join", headers=alice)).json()
    assert first["status"] == "waiting" and first["eta_s"] > 3000  # the open is an hour away
    await http.post(f"{url}/join", headers=bob)
    again = (await http.post(f"{url}/join", headers=alice)).json()
    mine = (await http.get(f"{url}/me", headers=alice)).json()
    assert again["ahead"] == mine["ahead"] and again["waiting"] == 2  # one place per account
    assert (await http.get(f"{url}/me", headers=customer(inproc))).json()["status"] == "none"
    problem(await hold_ga(http, event["id"], alice), 403, "queue_pass_required")

    opened = room(datetime.now(UTC))
    await http.put(url, json=opened, headers=organizer.auth)
    await http.put(f"/events/{other_event['id']}/queue", json=opened, headers=organizer.auth)
    alices = (await admitted(http, event["id"], alice))["pass"]
    bobs = (await admitted(http, event["id"], bob))["pass"]
    elsewhere = (await admitted(http, other_event["id"], alice))["pass"]
    before = await counts(http, event["id"])

    secret = app.state.jwt_secret
    claims = jwt.decode(alices, options={"verify_signature": False})
    expired = issue_queue_pass(
        secret,
        uuid.UUID(claims["sub"]),
        event["id"],
        claims["n"],
        claims["qi"],
        int(time.time() * 1000) - 1000,
    )
    forged = jwt.encode(
        {**claims, "n": "1"}, "not the key, though as long as one " * 2, algorithm="HS256"
    )
    access_token = alice["Authorization"].removeprefix("Bearer ")
    for wrong in (bobs, elsewhere, expired, forged, access_token, "garbage"):
        problem(await hold_ga(http, event["id"], alice, wrong), 403, "queue_pass_invalid")
    assert await counts(http, event["id"]) == before  # nothing held by any of them

    r = await hold_ga(http, event["id"], alice, alices)
    assert r.status_code == 201, r.text
    assert (await counts(http, event["id"]))["FLOOR"]["held"] == before["FLOOR"]["held"] + 1
    state = (await http.get(url)).json()
    assert state["state"] == "open" and state["admitted_total"] == 2


async def _race(
    http: httpx.AsyncClient, event_id: str, buyers: list[dict[str, str]], passes: list[str | None]
) -> list[int]:
    answers = await asyncio.gather(
        *(hold_ga(http, event_id, who, p) for who, p in zip(buyers, passes, strict=True))
    )
    return [a.status_code for a in answers]


async def test_a_thousand_racing_holds_with_a_hundred_passes_hold_a_hundred(
    http: httpx.AsyncClient, organizer: User, inproc: RunningApi
) -> None:
    event = await on_sale_event(http, organizer, sections=[BIG_FLOOR])
    url = f"/events/{event['id']}/queue"
    await http.put(url, json=room(datetime.now(UTC)), headers=organizer.auth)
    buyers = [customer(inproc) for _ in range(1000)]
    lucky = buyers[:100]
    admissions = await asyncio.gather(*(admitted(http, event["id"], who) for who in lucky))
    passes: list[str | None] = [a["pass"] for a in admissions] + [None] * 900
    statuses = await _race(http, event["id"], buyers, passes)
    assert statuses.count(201) == 100 and statuses[:100] == [201] * 100
    assert statuses.count(403) == 900
    assert (await counts(http, event["id"]))["FLOOR"]["held"] == 100


async def test_negative_control_with_the_room_off_the_same_race_holds_a_thousand(
    http: httpx.AsyncClient, organizer: User, inproc: RunningApi
) -> None:
    event = await on_sale_event(http, organizer, sections=[BIG_FLOOR])
    buyers = [customer(inproc) for _ in range(1000)]
    statuses = await _race(http, event["id"], buyers, [None] * 1000)
    assert statuses.count(201) == 1000
    assert (await counts(http, event["id"]))["FLOOR"]["held"] == 1000


async def test_auto_admits_fewer_when_checkouts_slow_down(
    http: httpx.AsyncClient,
    organizer: User,
    inproc: RunningApi,
    app: FastAPI,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    event = await on_sale_event(http, organizer, sections=[BIG_FLOOR])
    url = f"/events/{event['id']}/queue"
    auto = room(in_an_hour(), admit_per_minute="auto", max_active=10_000)
    await http.put(url, json=auto, headers=organizer.auth)
    crowd = [customer(inproc) for _ in range(400)]
    for who in crowd:
        await http.post(f"{url}/join", headers=who)
    await http.put(
        url, json={**auto, "opens_at": datetime.now(UTC).isoformat()}, headers=organizer.auth
    )

    async def rate() -> float:
        return float((await http.get(url)).json()["admission_rate_per_minute"])

    fast = await rate()

    async def rising() -> bool:  # no checkout is slow: auto admits more
        return await rate() > fast * 1.1

    await wait_for(rising, 15, "auto to raise its rate")

    engine = app.state.engine
    real = engine.place_order

    async def slow_place_order(*args: Any, **kwargs: Any) -> Any:
        await asyncio.sleep(2.5)  # a checkout slowed on purpose (a struggling payment path)
        return await real(*args, **kwargs)

    monkeypatch.setattr(engine, "place_order", slow_place_order)
    buyers = []
    for who in crowd:
        place = (await http.get(f"{url}/me", headers=who)).json()
        if place["status"] == "admitted":
            buyers.append((who, place["pass"]))
        if len(buyers) == 3:
            break
    holds = [(await hold_ga(http, event["id"], who, p)).json()["hold_id"] for who, p in buyers]
    await asyncio.gather(
        *(
            http.post("/orders", json={"hold_id": h}, headers=who)
            for h, (who, _) in zip(holds, buyers, strict=True)
        )
    )
    peak = await rate()

    async def falling() -> bool:
        return await rate() < peak * 0.7

    await wait_for(falling, 15, "auto to lower its rate after slow checkouts")


async def test_metrics_show_each_rooms_waiting_admitted_rate_and_expiries(
    http: httpx.AsyncClient, organizer: User, inproc: RunningApi
) -> None:
    event = await on_sale_event(http, organizer, sections=[BIG_FLOOR])
    url = f"/events/{event['id']}/queue"
    await http.put(url, json=room(in_an_hour(), admit_per_minute=1200), headers=organizer.auth)
    for _ in range(3):
        await http.post(f"{url}/join", headers=customer(inproc))

    def sample(text: str, name: str) -> float:
        for line in text.splitlines():
            if line.startswith(f'{name}{{event="{event["id"]}"}}'):
                return float(line.rsplit(" ", 1)[1])
        raise AssertionError(f"{name} of {event['id']} not in /metrics")

    before = (await http.get("/metrics")).text
    assert sample(before, "onsale_queue_waiting") == 3
    assert sample(before, "onsale_queue_admitted_total") == 0
    assert sample(before, "onsale_queue_admission_rate_per_minute") == 1200
    opened = room(datetime.now(UTC), admit_per_minute=1200, pass_ttl_s=30)
    await http.put(url, json=opened, headers=organizer.auth)

    async def all_in() -> bool:
        return sample((await http.get("/metrics")).text, "onsale_queue_admitted_total") == 3

    await wait_for(all_in, 15, "three admissions in /metrics")
    after = (await http.get("/metrics")).text
    assert sample(after, "onsale_queue_waiting") == 0
    assert sample(after, "onsale_queue_active") == 3
    assert sample(after, "onsale_queue_pass_expiries_total") == 0
    await http.put(url, json={**opened, "enabled": False}, headers=organizer.auth)
    assert f'onsale_queue_waiting{{event="{event["id"]}"}}' not in (await http.get("/metrics")).text
