"""The live seat map over real WebSockets: viewers rebuild the map from a
snapshot and merged deltas while thousands of changes land, on two workers; a
viewer that never reads holds nobody up; the protocol's edges."""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
import websockets
from fastapi import FastAPI
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine

from api.app import create_app
from api.live import Feed, LiveHub
from api.ratelimit import RateLimiter
from api.routers import live as live_routes
from api.settings import Settings
from engine.client import EngineClient
from engine.scripts import EventKeys
from persistence import events as event_store
from persistence import migrate
from sales.vocabulary import EventStatus
from tests.api_support import on_sale_event, served_in_process, user_with_role
from tests.conftest import LiveApi
from tests.live_support import (
    ChangeClock,
    StalledViewer,
    Viewer,
    change_storm,
    percentile,
)
from tests.sales import wait_for

pytestmark = pytest.mark.slow

STALLS = {"kind": "seated", "code": "A", "name": "Stalls", "price_cents": 4500}
FLOOR = {"kind": "general", "code": "FLOOR", "name": "Floor", "price_cents": 3000}


def seat_ids(code: str, rows: int, per_row: int) -> list[str]:
    return [f"{code}-{r}-{s}" for r in range(1, rows + 1) for s in range(1, per_row + 1)]


def ws_url(base_url: str, event_id: str) -> str:
    return base_url.replace("http://", "ws://") + f"/ws/events/{event_id}"


async def watching(viewers: list[Viewer]) -> list[asyncio.Task[None]]:
    tasks = [asyncio.create_task(v.run()) for v in viewers]
    await asyncio.wait_for(asyncio.gather(*(v.ready.wait() for v in viewers)), 30)
    return tasks


async def stop(tasks: list[asyncio.Task[None]]) -> None:
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def settled_on(http: httpx.AsyncClient, event_id: str, viewers: list[Viewer]) -> int:
    """Waits until every viewer's map equals the REST view at the same version;
    returns that version."""
    seen: dict[str, Any] = {}

    async def agreed() -> bool:
        seats = (await http.get(f"/events/{event_id}/seats")).json()
        counts = (await http.get(f"/events/{event_id}/availability")).json()
        taken = {s["id"]: s["status"] for s in seats["seats"] if s["status"] != "available"}
        sections = {s["code"]: (s["available"], s["held"], s["sold"]) for s in counts["sections"]}
        seen.update(version=seats["version"], taken=taken, sections=sections)
        version = seats["version"]
        return version == counts["version"] and all(
            (v.map.version, v.map.seats, v.map.sections) == (version, taken, sections)
            for v in viewers
        )

    try:
        await wait_for(agreed, 20, "every viewer's map to equal GET /seats")
    except AssertionError:
        wrong = [v for v in viewers if v.map.seats != seen["taken"]]
        raise AssertionError(
            f"REST at {seen['version']}; viewers at {sorted({v.map.version for v in viewers})}; "
            f"{len(wrong)} maps differ"
        ) from None
    return int(seen["version"])


async def test_twenty_viewers_on_two_workers_rebuild_the_map_through_10000_changes(
    live_api: LiveApi, db: AsyncEngine, ray_local: str
) -> None:
    async with httpx.AsyncClient(base_url=live_api.base_url, timeout=30) as http:
        organizer = await user_with_role(db, http, "organizer")
        stalls = {**STALLS, "rows": 20, "seats_per_row": 50}
        event = await on_sale_event(http, organizer, [stalls, {**FLOOR, "capacity": 2000}])
        event_id = event["id"]
        viewers = [Viewer(ws_url(live_api.base_url, event_id)) for _ in range(20)]
        tasks = await watching(viewers)
        try:
            metrics = (await http.get("/metrics")).text
            per_worker = re.findall(r'^onsale_ws_viewers\{pid="(\d+)"\} (\S+)', metrics, re.M)
            assert len([pid for pid, n in per_worker if float(n) > 0]) == 2, per_worker
            start = viewers[0].map.version

            engine = EngineClient(live_api.redis_url)
            try:
                stats = await change_storm(
                    engine, event_id, seat_ids("A", 20, 50), 10_000, general="FLOOR", concurrency=10
                )
            finally:
                await engine.aclose()
            assert stats.applied > 5_000, stats
            final = await settled_on(http, event_id, viewers)
        finally:
            await stop(tasks)
    change_sets = final - start
    assert change_sets > 100  # batched by the actor, but many versions still
    for v in viewers:
        assert v.gaps == 0 and v.snapshots == 1, (v.gaps, v.snapshots)
        assert v.deltas < change_sets  # merged per tick, not one message per change set
    print(
        f"\n{stats.applied} changes applied ({stats.refused} refused) in {change_sets} change "
        f"sets; each viewer got {min(v.deltas for v in viewers)}-"
        f"{max(v.deltas for v in viewers)} deltas"
    )


# ------------------------------------------------------------ one process


@dataclass
class InProcess:
    app: FastAPI
    base_url: str
    port: int
    http: httpx.AsyncClient

    @property
    def hub(self) -> LiveHub:
        return self.app.state.live  # type: ignore[no-any-return]

    @property
    def engine(self) -> EngineClient:
        return self.app.state.engine  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
async def server(
    redis_url: str, database_url: str, ray_local: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[InProcess]:
    """The app under uvicorn in the test's own process, so a test can look into
    its hub (queues, overflows) while real sockets talk to it."""
    migrate.upgrade(database_url)
    settings = Settings(
        redis_url=redis_url,
        database_url=database_url,
        ray_address=ray_local,
        data_dir=tmp_path_factory.mktemp("live"),
        rate_limits="off",
        jwt_secret="live-stream-tests-" + uuid.uuid4().hex,
    )
    app = create_app(settings)
    # uvicorn's own WebSocket protocol: every delta takes the ASGI path through
    # each viewer's queue (`onsale serve`'s direct writes are live_api's).
    async with (
        served_in_process(app, {"ws": "auto"}) as base_url,
        httpx.AsyncClient(base_url=base_url, timeout=30) as http,
    ):
        yield InProcess(app, base_url, int(urlsplit(base_url).port or 0), http)


async def _event(server: InProcess, db: AsyncEngine, rows: int = 10, per_row: int = 20) -> str:
    organizer = await user_with_role(db, server.http, "organizer")
    stalls = {**STALLS, "rows": rows, "seats_per_row": per_row}
    event = await on_sale_event(  # no per-customer limit: the storms hold by the hundred
        server.http,
        organizer,
        [stalls, {**FLOOR, "capacity": 500}],
        max_tickets_per_customer=0,
        max_held_per_customer=0,
    )
    return str(event["id"])


async def _latencies_under_storm(
    server: InProcess, redis: Redis, event_id: str, seats: list[str], *, stalled: bool, seed: int
) -> tuple[list[float], Viewer | None]:
    """Five viewers' delivery latencies while 3,000 changes arrive at 500/s, with
    or without a viewer that never reads beside them (it asks for a snapshot
    every 10 ms)."""
    viewers = [Viewer(ws_url(server.base_url, event_id)) for _ in range(5)]
    tasks = await watching(viewers)
    blocker = None
    try:
        if stalled:
            blocker = await StalledViewer().open("127.0.0.1", server.port, f"/ws/events/{event_id}")
            tasks.append(asyncio.create_task(blocker.ask_for_snapshots(every_s=0.01)))
        async with ChangeClock(redis, event_id) as clock:
            await change_storm(
                server.engine, event_id, seats, 3_000, concurrency=20, rate_per_s=500, seed=seed
            )
            await settled_on(server.http, event_id, viewers)
        return clock.latencies_s(viewers), blocker and _stalled_one(server, event_id)
    finally:
        await stop(tasks)
        if blocker is not None:
            blocker.close()


def _stalled_one(server: InProcess, event_id: str) -> Any:
    feed: Feed = server.hub.feeds[event_id]
    return [v for v in feed.viewers if v.overflows or v.needs_snapshot]


async def test_a_viewer_that_never_reads_does_not_delay_the_others(
    server: InProcess, db: AsyncEngine, redis: Redis
) -> None:
    event_id = await _event(server, db, rows=40, per_row=75)
    seats = seat_ids("A", 40, 75)
    # Half the hall held first, so that every snapshot is tens of kilobytes.
    for start in range(0, 1500, 100):
        await server.engine.hold_seats(event_id, "early", seats[start : start + 100], ttl_s=600)
    alone, _ = await _latencies_under_storm(server, redis, event_id, seats, stalled=False, seed=1)
    beside, stalled = await _latencies_under_storm(
        server, redis, event_id, seats, stalled=True, seed=2
    )
    print(
        f"\ndelivery latency p50/p99: alone {percentile(alone, 0.5) * 1000:.0f}/"
        f"{percentile(alone, 0.99) * 1000:.0f} ms, beside a stalled viewer "
        f"{percentile(beside, 0.5) * 1000:.0f}/{percentile(beside, 0.99) * 1000:.0f} ms"
    )
    # The stalled viewer overflowed its bounded queue (so the server holds at
    # most queue_limit deltas for it) ...
    assert stalled and all(len(v.queue) <= server.hub.queue_limit for v in stalled), stalled
    assert any(v.overflows for v in stalled)
    # ... while the others got every change (settled_on) and promptly.
    assert percentile(beside, 0.99) < max(1.0, 3 * percentile(alone, 0.99))


async def test_negative_control_without_the_bound_a_stalled_viewer_is_buffered_without_end(
    server: InProcess, db: AsyncEngine, redis: Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same stalled viewer with the queue bound switched off: the server
    keeps every delta for it, so memory grows with the sale, not the bound."""
    monkeypatch.setattr(server.hub, "queue_limit", 10**9)
    event_id = await _event(server, db, rows=40, per_row=75)
    seats = seat_ids("A", 40, 75)
    for start in range(0, 1500, 100):
        await server.engine.hold_seats(event_id, "early", seats[start : start + 100], ttl_s=600)
    _, stalled = await _latencies_under_storm(server, redis, event_id, seats, stalled=True, seed=3)
    longest = max((len(v.queue) for v in stalled), default=0)
    assert longest > 64, f"only {longest} deltas queued for the stalled viewer"


async def test_a_resync_request_is_answered_with_a_fresh_snapshot(
    server: InProcess, db: AsyncEngine
) -> None:
    event_id = await _event(server, db)
    async with websockets.connect(ws_url(server.base_url, event_id)) as ws:
        first = json.loads(await ws.recv())
        assert first["type"] == "snapshot" and first["seats"] == {}
        await server.engine.hold_seats(event_id, "c1", ["A-1-1", "A-1-2"], ttl_s=600)
        delta = json.loads(await asyncio.wait_for(ws.recv(), 5))
        assert delta["type"] == "delta" and delta["version"] == first["version"] + 1
        assert {c.get("seat"): c.get("status") for c in delta["changes"] if "seat" in c} == {
            "A-1-1": "held",
            "A-1-2": "held",
        }
        await ws.send(json.dumps({"type": "resync"}))
        again = json.loads(await asyncio.wait_for(ws.recv(), 5))
        assert again["type"] == "snapshot" and again["version"] == delta["version"]
        assert again["seats"] == {"A-1-1": "held", "A-1-2": "held"}
        await ws.send("not json")
        error = json.loads(await asyncio.wait_for(ws.recv(), 5))
        assert error == {"type": "error", "code": "bad_message", "detail": error["detail"]}


async def test_a_retired_events_stream_starts_from_a_rebuilt_snapshot(
    server: InProcess, db: AsyncEngine, redis: Redis
) -> None:
    """A finished event whose inventory left Redis (persistence.retire):
    its seat-map stream rebuilds it instead of failing."""
    event_id = await _event(server, db)
    await server.engine.hold_seats(event_id, "c1", ["A-1-1"], ttl_s=600)
    await event_store.end_event(db, event_id, EventStatus.CLOSED)
    await server.engine.set_status(event_id, EventStatus.CLOSED)
    await redis.unlink(*EventKeys(event_id).mutation_keys())  # as retire.lua leaves it
    async with websockets.connect(ws_url(server.base_url, event_id)) as ws:
        first = json.loads(await asyncio.wait_for(ws.recv(), 10))
    assert first["type"] == "snapshot" and first["status"] == "closed"
    assert first["seats"] == {}  # the hold was not sold: gone with the inventory
    assert await redis.exists(EventKeys(event_id).meta) == 1


async def test_an_idle_stream_is_pinged(
    server: InProcess, db: AsyncEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(live_routes, "PING_INTERVAL_S", 0.2)
    event_id = await _event(server, db)
    async with websockets.connect(ws_url(server.base_url, event_id)) as ws:
        assert json.loads(await ws.recv())["type"] == "snapshot"
        assert json.loads(await asyncio.wait_for(ws.recv(), 5)) == {"type": "ping"}


async def test_unknown_and_draft_events_close_with_4404(server: InProcess, db: AsyncEngine) -> None:
    organizer = await user_with_role(db, server.http, "organizer")
    draft = await server.http.post(
        "/events",
        json={"name": "Draft", "venue": "Hall", "starts_at": "2027-06-01T20:00:00Z",
              "currency": "EUR"},
        headers=organizer.auth,
    )  # fmt: skip
    for event_id in ("no-such-event", draft.json()["id"]):
        async with websockets.connect(ws_url(server.base_url, event_id)) as ws:
            with pytest.raises(websockets.ConnectionClosed) as closed:
                await asyncio.wait_for(ws.recv(), 5)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 4404


# ---------------------------------------------------------------- abuse (issue 16, finding 10)


async def _closed_with(ws: Any) -> tuple[int, str]:
    """The close code and reason of a socket the server closes next."""
    with pytest.raises(websockets.ConnectionClosed) as closed:
        while True:
            await asyncio.wait_for(ws.recv(), 5)
    assert closed.value.rcvd is not None
    return closed.value.rcvd.code, closed.value.rcvd.reason


async def test_a_page_of_another_origin_is_refused_at_the_handshake(
    server: InProcess, db: AsyncEngine
) -> None:
    event_id = await _event(server, db)
    url = ws_url(server.base_url, event_id)
    with pytest.raises(websockets.InvalidStatus) as refused:
        await websockets.connect(url, origin="http://evil.example")  # type: ignore[arg-type]
    assert refused.value.response.status_code == 403
    own = f"http://127.0.0.1:{server.port}"
    async with websockets.connect(url, origin=own) as ws:  # type: ignore[arg-type]
        assert json.loads(await ws.recv())["type"] == "snapshot"
    async with websockets.connect(url) as ws:  # no Origin: not a browser
        assert json.loads(await ws.recv())["type"] == "snapshot"


async def test_an_address_over_its_socket_cap_is_told_to_come_back_later(
    server: InProcess, db: AsyncEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(server.app.state.settings, "live_max_per_address", 2)
    event_id = await _event(server, db)
    url = ws_url(server.base_url, event_id)
    async with websockets.connect(url) as one, websockets.connect(url) as two:
        for ws in (one, two):
            assert json.loads(await ws.recv())["type"] == "snapshot"
        async with websockets.connect(url) as three:
            assert await _closed_with(three) == (1013, "too many sockets from this address")
    async with websockets.connect(url) as again:  # the others closed: room again
        assert json.loads(await again.recv())["type"] == "snapshot"


async def test_handshakes_over_the_address_rate_are_told_to_come_back_later(
    server: InProcess, db: AsyncEngine, redis_url: str
) -> None:
    event_id = await _event(server, db)
    limiter = RateLimiter.from_settings("live=2/minute", redis_url)
    assert limiter.limiter is not None
    await limiter.limiter.storage.reset()
    kept, server.app.state.limiter = server.app.state.limiter, limiter  # (monkeypatch would
    try:  # delete it from Starlette's State on undo)
        url = ws_url(server.base_url, event_id)
        for _ in range(2):
            async with websockets.connect(url) as ws:
                assert json.loads(await ws.recv())["type"] == "snapshot"
        async with websockets.connect(url) as ws:
            assert await _closed_with(ws) == (1013, "rate_limited")
    finally:
        server.app.state.limiter = kept


async def test_a_client_that_keeps_sending_garbage_is_closed_not_answered_for_ever(
    server: InProcess, db: AsyncEngine
) -> None:
    event_id = await _event(server, db)
    async with websockets.connect(ws_url(server.base_url, event_id)) as ws:
        assert json.loads(await ws.recv())["type"] == "snapshot"
        errors = 0
        with pytest.raises(websockets.ConnectionClosed) as closed:
            for _ in range(50):
                await ws.send("garbage")
            while True:
                message = json.loads(await asyncio.wait_for(ws.recv(), 5))
                errors += message.get("code") == "bad_message"
        # At most one answer per allowed bad message (those still queued when
        # the close goes out may never be sent), then the close.
        assert errors <= live_routes.BAD_MESSAGES_MAX
        assert closed.value.rcvd is not None
        assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (1008, "too many bad messages")
