"""The waiting room in the engine: fair places, the admission rate, and the
pass the hold script checks (lua/queue.lua, lib.lua), on real Redis and Ray."""

from __future__ import annotations

import asyncio
import secrets
import time
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import pytest
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine

from engine.client import EngineClient
from engine.errors import QueuePassInvalid, QueuePassRequired
from engine.model import QueuePass
from engine.scripts import EventKeys
from persistence.events import EventDraft, SectionSpec
from persistence.queues import QueueRecord, put_queue
from persistence.rebuild import PostgresRestore
from sales import catalog
from sales.vocabulary import SectionKind
from tests.sales import published_event, wait_for

RES = 2**53


def spearman(xs: Sequence[int], ys: Sequence[int]) -> float:
    """Rank correlation of two orderings of the same people (no ties)."""
    n = len(xs)
    rank_x = {v: i for i, v in enumerate(sorted(xs))}
    rank_y = {v: i for i, v in enumerate(sorted(ys))}
    d2 = sum((rank_x[x] - rank_y[y]) ** 2 for x, y in zip(xs, ys, strict=True))
    return 1 - 6 * d2 / (n * (n * n - 1))


def settings(**overrides: Any) -> dict[str, Any]:
    base = {
        "on": True,
        "opens_at": int(time.time() * 1000) + 3_600_000,  # in an hour: joins are pre-queue
        "order": "random",
        "apm": 600_000,
        "max_active": 1_000_000,
        "pass_ttl_ms": 600_000,
    }
    return {**base, **overrides}


async def join_all(client: EngineClient, event_id: str, customers: Sequence[str]) -> None:
    """Joins in this exact order (one after another), each with a fresh random place."""
    for customer in customers:
        await client.queue(event_id, "join", customer, repr(secrets.randbelow(RES) / RES))


async def admission_order(redis: Redis, event_id: str) -> dict[str, int]:
    raw: dict[bytes, bytes] = await redis.hgetall(EventKeys(event_id).passes)
    return {k.decode(): int(v.split(b":")[0]) for k, v in raw.items()}


async def admitted_all(redis: Redis, event_id: str, n: int) -> None:
    async def done() -> bool:
        return int(await redis.hlen(EventKeys(event_id).passes)) >= n

    await wait_for(done, 30, f"{n} admissions")


async def test_pre_queue_places_are_random_and_later_joins_first_come_first_served(
    db: AsyncEngine, client: EngineClient, redis: Redis
) -> None:
    event_id = await published_event(db, client)
    await client.queue(event_id, "configure", settings())
    early = [f"early{i}" for i in range(2000)]
    await join_all(client, event_id, early)
    again = await client.queue(event_id, "join", "early0", "0.0")  # rejoining keeps the place
    assert again["status"] == "waiting" and again["waiting"] == 2000
    before = await client.queue(event_id, "me", "early0")
    assert before["ahead"] == again["ahead"]

    await client.queue(event_id, "configure", settings(opens_at=int(time.time() * 1000)))
    late = [f"late{i}" for i in range(500)]
    await join_all(client, event_id, late)
    await client.ensure_actor(event_id)
    await admitted_all(redis, event_id, 2500)

    order = await admission_order(redis, event_id)
    rho = spearman(list(range(2000)), [order[c] for c in early])
    print(f"\nSpearman rho, join order vs admission order, 2,000 pre-queue joins: {rho:+.3f}")
    assert abs(rho) < 0.1
    assert max(order[c] for c in early) < min(order[c] for c in late)  # every early one first
    assert [order[c] for c in late] == sorted(order[c] for c in late)  # then in join order


async def test_negative_control_a_fifo_pre_queue_admits_in_join_order(
    db: AsyncEngine, client: EngineClient, redis: Redis
) -> None:
    """The same measurement on a first-come pre-queue: rho is about 1, so the
    test above would see an ordering that rewards arriving early."""
    event_id = await published_event(db, client)
    await client.queue(event_id, "configure", settings(order="fifo"))
    early = [f"early{i}" for i in range(2000)]
    await join_all(client, event_id, early)
    await client.queue(
        event_id, "configure", settings(order="fifo", opens_at=int(time.time() * 1000))
    )
    await client.ensure_actor(event_id)
    await admitted_all(redis, event_id, 2000)
    order = await admission_order(redis, event_id)
    rho = spearman(list(range(2000)), [order[c] for c in early])
    print(f"\nSpearman rho with a FIFO pre-queue: {rho:+.3f}")
    assert rho > 0.99


async def test_a_fixed_rate_is_kept_within_ten_percent(
    db: AsyncEngine, client: EngineClient, redis: Redis
) -> None:
    event_id = await published_event(db, client)
    rate = 3000  # a minute: 500 in a 10 s window
    await client.queue(event_id, "configure", settings(apm=rate))
    await join_all(client, event_id, [f"c{i}" for i in range(1500)])
    await client.ensure_actor(event_id)
    await client.queue(event_id, "configure", settings(apm=rate, opens_at=int(time.time() * 1000)))

    async def admitted() -> int:
        return int((await client.queue(event_id, "state"))["admitted_total"])

    await wait_for(lambda: _positive(admitted()), 5, "the first admissions")
    start, began = await admitted(), time.monotonic()
    await asyncio.sleep(10)  # the measured window itself, not a synchronisation
    count, elapsed = await admitted() - start, time.monotonic() - began
    expected = rate / 60 * elapsed
    print(f"\nadmitted {count} in {elapsed:.1f} s at {rate}/min (expected {expected:.0f})")
    assert abs(count - expected) <= 0.1 * expected


async def _positive(value: Any) -> bool:
    return bool(await value > 0)


async def test_admission_stops_at_sold_out_and_starts_again_when_places_come_back(
    db: AsyncEngine, client: EngineClient, redis: Redis
) -> None:
    event_id = uuid.uuid4().hex[:16]
    draft = EventDraft(
        "Small",
        "Club",
        datetime.now(UTC),
        "EUR",
        max_tickets_per_customer=0,
        max_held_per_customer=0,
    )
    floor = SectionSpec("GA", "Floor", 1000, SectionKind.GENERAL, capacity=100)
    await catalog.create_event(db, None, draft, [floor], event_id=event_id)
    await catalog.put_on_sale(db, client, event_id)
    everything = await client.hold_quantity(event_id, "whale", "GA", 100, ttl_s=600)
    await client.queue(event_id, "configure", settings(opens_at=int(time.time() * 1000)))
    await join_all(client, event_id, [f"c{i}" for i in range(20)])
    await client.ensure_actor(event_id)
    state = await client.queue(event_id, "state")
    assert state["state"] == "sold_out"
    ticks = (await client.actor_stats(event_id))["admission_ticks"]

    async def three_ticks() -> bool:
        return (await client.actor_stats(event_id))["admission_ticks"] >= ticks + 3

    await wait_for(three_ticks, 10, "three admission ticks")
    assert (await client.queue(event_id, "state"))["admitted_total"] == 0  # none while sold out

    await client.release(event_id, everything.hold_id)  # 100 places come back
    await admitted_all(redis, event_id, 20)
    assert (await client.queue(event_id, "state"))["state"] == "open"


async def test_a_hold_needs_the_admission_on_record_while_the_room_is_on(
    db: AsyncEngine, client: EngineClient, redis: Redis
) -> None:
    event_id = await published_event(db, client)
    await client.hold_quantity(event_id, "before", "GA", 1, ttl_s=600)  # no room: no pass
    await client.queue(event_id, "configure", settings(opens_at=int(time.time() * 1000)))
    await join_all(client, event_id, ["alice", "bob"])
    await client.ensure_actor(event_id)
    await admitted_all(redis, event_id, 2)
    alice = await client.queue(event_id, "me", "alice")
    assert alice["status"] == "admitted"
    good = QueuePass(alice["nonce"], alice["issued_at_ms"], alice["expires_at_ms"])
    bob = await client.queue(event_id, "me", "bob")
    bobs = QueuePass(bob["nonce"], bob["issued_at_ms"], bob["expires_at_ms"])

    with pytest.raises(QueuePassRequired):
        await client.hold_quantity(event_id, "alice", "GA", 1, ttl_s=600)
    with pytest.raises(QueuePassInvalid):  # bob's admission, alice's hold
        await client.hold_quantity(event_id, "alice", "GA", 1, ttl_s=600, queue_pass=bobs)
    with pytest.raises(QueuePassInvalid):  # never admitted
        await client.hold_quantity(event_id, "mallory", "GA", 1, ttl_s=600, queue_pass=good)
    expired = QueuePass(good.nonce, good.issued_at_ms, int(time.time() * 1000) - 1)
    with pytest.raises(QueuePassInvalid):
        await client.hold_quantity(event_id, "alice", "GA", 1, ttl_s=600, queue_pass=expired)
    held = await client.hold_quantity(event_id, "alice", "GA", 2, ttl_s=600, queue_pass=good)
    assert held.quantity == 2
    # The engine's own holds for someone (waiting-list offers) need no pass.
    await client.hold_quantity(event_id, "offered", "GA", 1, ttl_s=600, queue_exempt=True)
    # Holding keeps alice's place in the sale as long as her hold lives.
    assert await redis.zscore(EventKeys(event_id).active, "alice") == held.expires_at_ms


async def test_when_redis_loses_the_room_passes_stay_good_and_the_waiting_join_again(
    db: AsyncEngine, redis: Redis, redis_url: str, database_url: str, ray_local: str
) -> None:
    """The documented policy (DESIGN.md, "The waiting room"): the settings
    come back from Postgres, passes issued before the loss still hold, those
    who waited have lost their place and join again, at random for a while."""
    client = EngineClient(redis_url, restore=PostgresRestore(database_url, queue_reform_s=60))
    try:
        event_id = await published_event(db, client)
        record = QueueRecord(event_id, True, datetime.now(UTC), 600, 1, 600)  # one at a time
        await put_queue(db, record)
        await client.queue(event_id, "configure", record.engine_settings())
        await join_all(client, event_id, ["alice", "bob"])
        await client.ensure_actor(event_id)
        await admitted_all(redis, event_id, 1)
        alice = await client.queue(event_id, "me", "alice")
        assert alice["status"] == "admitted"
        assert (await client.queue(event_id, "me", "bob"))["status"] == "waiting"
        pass_ = QueuePass(alice["nonce"], alice["issued_at_ms"], alice["expires_at_ms"])

        keys = EventKeys(event_id)
        await redis.unlink(*keys.mutation_keys(), keys.queue, keys.waiting)  # Redis lost it all
        held = await client.hold_quantity(event_id, "alice", "GA", 1, ttl_s=600, queue_pass=pass_)
        assert held.quantity == 1  # the rebuild kept the room on and her pass good
        assert (await client.queue(event_id, "state"))["state"] == "open"
        with pytest.raises(QueuePassRequired):  # the room came back before any hold could
            await client.hold_quantity(event_id, "carol", "GA", 1, ttl_s=600)
        now = int(time.time() * 1000)
        made_up = QueuePass("7", now + 1000, now + 60_000)  # claims an admission after the loss
        with pytest.raises(QueuePassInvalid):
            await client.hold_quantity(event_id, "carol", "GA", 1, ttl_s=600, queue_pass=made_up)
        assert (await client.queue(event_id, "me", "bob"))["status"] == "none"  # place lost
        await client.queue(event_id, "join", "bob", "0.25")
        assert await redis.zscore(keys.waiting, "bob") == 0.25  # a random place again
    finally:
        await client.aclose()


async def test_an_unused_pass_frees_its_place_for_the_next_in_line_and_a_hold_keeps_it(
    db: AsyncEngine, client: EngineClient, redis: Redis
) -> None:
    event_id = await published_event(db, client)
    now = int(time.time() * 1000)
    await client.queue(
        event_id, "configure", settings(opens_at=now, max_active=1, pass_ttl_ms=1500)
    )
    await join_all(client, event_id, ["idle", "next", "last"])
    await client.ensure_actor(event_id)
    await admitted_all(redis, event_id, 1)
    idle = await client.queue(event_id, "me", "idle")
    assert idle["status"] == "admitted"
    assert (await client.queue(event_id, "me", "next"))["status"] == "waiting"  # no room yet

    await admitted_all(redis, event_id, 2)  # idle's pass lapsed unused: next is in
    state = await client.queue(event_id, "state")
    assert state["expired_total"] == 1 and state["active"] == 1
    assert (await client.queue(event_id, "me", "idle"))["status"] == "expired"
    stale = QueuePass(idle["nonce"], idle["issued_at_ms"], idle["expires_at_ms"] + 60_000)
    with pytest.raises(QueuePassInvalid):  # even with its expiry stretched: not on record
        await client.hold_quantity(event_id, "idle", "GA", 1, ttl_s=600, queue_pass=stale)

    nxt = await client.queue(event_id, "me", "next")
    pass_ = QueuePass(nxt["nonce"], nxt["issued_at_ms"], nxt["expires_at_ms"])
    await client.hold_quantity(event_id, "next", "GA", 1, ttl_s=600, queue_pass=pass_)

    async def past_the_pass() -> bool:  # next's pass has ended, their hold has not
        return time.time() * 1000 > nxt["expires_at_ms"]

    await wait_for(past_the_pass, 10, "next's pass to end")
    ticks = (await client.actor_stats(event_id))["admission_ticks"]

    async def two_more_ticks() -> bool:
        return (await client.actor_stats(event_id))["admission_ticks"] >= ticks + 2

    await wait_for(two_more_ticks, 10, "two admission ticks after the pass ended")
    assert (await client.queue(event_id, "me", "last"))["status"] == "waiting"  # still no room
