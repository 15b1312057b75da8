"""The waiting room's WebSocket: places pushed as admissions go by, then the
pass (the app under uvicorn in this process, real Redis, Postgres and Ray)."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
import websockets
from sqlalchemy.ext.asyncio import AsyncEngine

from api.app import create_app
from api.security import issue_access_token
from api.settings import Settings
from persistence import migrate
from sales.vocabulary import Role
from tests.api_support import GENERAL, on_sale_event, served_in_process, user_with_role


@pytest.fixture(scope="module")
async def server(
    redis_url: str, database_url: str, ray_local: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[tuple[str, httpx.AsyncClient, str]]:
    migrate.upgrade(database_url)
    secret = "queue-stream-tests-" + uuid.uuid4().hex
    settings = Settings(
        redis_url=redis_url,
        database_url=database_url,
        ray_address=ray_local,
        data_dir=tmp_path_factory.mktemp("queue-stream"),
        rate_limits="off",
        jwt_secret=secret,
    )
    async with (
        served_in_process(create_app(settings), {"ws": "auto"}) as base_url,
        httpx.AsyncClient(base_url=base_url, timeout=30) as http,
    ):
        yield base_url, http, secret


def ws_url(base_url: str, event_id: str) -> str:
    return base_url.replace("http://", "ws://") + f"/ws/events/{event_id}/queue"


async def messages_until_admitted(ws: Any) -> list[dict[str, Any]]:
    seen = []
    while True:
        message = json.loads(await asyncio.wait_for(ws.recv(), 20))
        if message["type"] == "ping":
            continue
        seen.append(message)
        if message["type"] == "admitted":
            return seen


async def test_viewers_see_their_place_fall_and_get_their_pass(
    server: tuple[str, httpx.AsyncClient, str], db: AsyncEngine
) -> None:
    base_url, http, secret = server
    organizer = await user_with_role(db, http, "organizer")
    event = await on_sale_event(http, organizer, sections=[{**GENERAL, "capacity": 500}])
    url = f"/events/{event['id']}/queue"
    later = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    body = {
        "enabled": True,
        "opens_at": later,
        "admit_per_minute": 240,
        "max_active": 100,
        "pass_ttl_s": 600,
        "pre_open_order": "fifo",
    }
    assert (await http.put(url, json=body, headers=organizer.auth)).status_code == 200
    tokens = [issue_access_token(secret, uuid.uuid4(), Role.CUSTOMER, 600) for _ in range(6)]
    for token in tokens:
        r = await http.post(f"{url}/join", headers={"Authorization": f"Bearer {token}"})
        assert r.status_code == 200, r.text

    async with websockets.connect(ws_url(base_url, event["id"])) as last:
        await last.send(json.dumps({"type": "auth", "token": tokens[-1]}))
        first = json.loads(await asyncio.wait_for(last.recv(), 10))
        assert first == {**first, "type": "position", "ahead": 5, "state": "pre_queue"}
        assert first["eta_s"] > 3000
        body["opens_at"] = datetime.now(UTC).isoformat()  # 4 a second from now on
        await http.put(url, json=body, headers=organizer.auth)
        seen = await messages_until_admitted(last)
    places = [m["ahead"] for m in seen if m["type"] == "position" and "ahead" in m]
    assert places == sorted(places, reverse=True) and places[-1] < 5  # it only ever fell
    admitted = seen[-1]
    assert admitted["pass"] and admitted["pass_expires_at"]
    hold = await http.post(
        f"/events/{event['id']}/holds",
        json={"section": "FLOOR", "quantity": 1},
        headers={"Authorization": f"Bearer {tokens[-1]}", "Onsale-Queue-Pass": admitted["pass"]},
    )
    assert hold.status_code == 201, hold.text


async def test_the_token_comes_first_and_only_in_a_message(
    server: tuple[str, httpx.AsyncClient, str], db: AsyncEngine
) -> None:
    base_url, http, secret = server
    organizer = await user_with_role(db, http, "organizer")
    event = await on_sale_event(http, organizer)
    for first in ({"type": "hello"}, {"type": "auth", "token": "forged"}):
        async with websockets.connect(ws_url(base_url, event["id"])) as ws:
            await ws.send(json.dumps(first))
            with pytest.raises(websockets.ConnectionClosed) as closed:
                await asyncio.wait_for(ws.recv(), 10)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008
    token = issue_access_token(secret, uuid.uuid4(), Role.CUSTOMER, 600)
    async with websockets.connect(ws_url(base_url, event["id"])) as ws:
        await ws.send(json.dumps({"type": "auth", "token": token}))
        answer = json.loads(await asyncio.wait_for(ws.recv(), 10))
    assert answer["type"] == "position" and answer["status"] == "none"  # has not joined
