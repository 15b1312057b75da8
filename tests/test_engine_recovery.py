"""Retries, actor restarts, the sweeper and the change stream, through Ray."""

from __future__ import annotations

import asyncio
import json
import random
import uuid
from collections.abc import Sequence
from typing import Any

import pytest
import ray
from redis.asyncio import Redis

from engine.client import EngineClient
from engine.errors import EngineError, EngineTimeout, EngineUnavailable, SeatsUnavailable
from engine.model import (
    Command,
    ConfirmHold,
    GeneralSection,
    HoldPlaced,
    HoldQuantity,
    HoldSeats,
    Outcome,
    SaleConfirmed,
    SeatedSection,
    Snapshot,
)
from engine.scripts import EventKeys

pytestmark = pytest.mark.recovery

TRANSIENT = (EngineTimeout, EngineUnavailable)


async def submit_until_answered(
    client: EngineClient, event_id: str, commands: Sequence[Command]
) -> list[Outcome | EngineError]:
    """Sends every command, retrying transient failures with the same ids, as a
    well-behaved API worker would; returns each command's final answer."""
    answers: list[Outcome | EngineError | None] = [None] * len(commands)
    todo = list(range(len(commands)))
    for _ in range(20):
        results = await asyncio.gather(
            *[client.submit(event_id, commands[i]) for i in todo], return_exceptions=True
        )
        retry = []
        for i, result in zip(todo, results, strict=True):
            if isinstance(result, TRANSIENT):
                retry.append(i)
            elif isinstance(result, EngineError | HoldPlaced | SaleConfirmed):
                answers[i] = result
            else:
                raise AssertionError(f"unexpected answer {result!r}")
        if not retry:
            break
        todo = retry
    assert all(a is not None for a in answers), "some commands never got an answer"
    return answers  # type: ignore[return-value]


async def kill_actor_midway(
    client: EngineClient, event_id: str, commands: Sequence[Command], kill_after: int
) -> list[Outcome | EngineError]:
    """Streams commands in waves of 100 and kills the actor after ``kill_after``."""
    answers: list[Outcome | EngineError] = []
    for start in range(0, len(commands), 100):
        wave = asyncio.ensure_future(
            submit_until_answered(client, event_id, commands[start : start + 100])
        )
        if start == kill_after:
            await asyncio.sleep(0)  # let the wave's batch be queued, then kill under it
            ray.kill(client.actor(event_id), no_restart=False)
        answers.extend(await wave)
    return answers


async def test_retried_holds_and_confirms_survive_an_actor_kill_without_doubling(
    client: EngineClient, redis: Redis, event_id: str
) -> None:
    await client.load_inventory(event_id, [GeneralSection("GA", 100_000)])
    rng = random.Random(3)
    holds = [
        HoldQuantity(uuid.uuid4().hex, f"c{i}", "GA", rng.randint(1, 4), 600_000)
        for i in range(2000)
    ]
    first = await kill_actor_midway(client, event_id, holds, kill_after=700)
    assert all(isinstance(a, HoldPlaced) for a in first)
    again = await submit_until_answered(client, event_id, holds)  # a full client retry
    assert all(isinstance(a, HoldPlaced) and a.replayed for a in again)
    total = sum(h.quantity for h in holds)
    assert (await client.snapshot(event_id)).section("GA").held == total
    assert await redis.hlen(EventKeys(event_id).holds) == len(holds)

    confirms = [ConfirmHold(h.hold_id, f"order-{h.hold_id}") for h in holds]
    sold = await kill_actor_midway(client, event_id, confirms, kill_after=1100)
    assert all(isinstance(a, SaleConfirmed) for a in sold)
    await submit_until_answered(client, event_id, confirms)
    outbox = await redis.xrange(EventKeys(event_id).outbox)
    orders = [fields[b"order_id"] for _, fields in outbox]
    assert len(orders) == len(set(orders)) == len(holds)  # every sale once, none twice
    ga = (await client.snapshot(event_id)).section("GA")
    assert (ga.held, ga.sold) == (0, total)
    # the restarted actor carries on taking new work
    assert (await client.hold_quantity(event_id, "late", "GA", 2, ttl_s=60)).quantity == 2
    # and it is a restarted one: it has seen far fewer than the 8,001 operations sent
    assert (await client.actor_stats(event_id))["ops"] < 4000


async def test_same_hold_id_from_two_workers_at_once_holds_once(
    client: EngineClient, redis_url: str, ray_local: str, event_id: str
) -> None:
    other = EngineClient(redis_url)
    try:
        await client.load_inventory(event_id, [SeatedSection("A", 2, 2)])
        command = HoldSeats("dup-" + event_id, "alice", ("A-1-1", "A-1-2"), 60_000)
        results = await asyncio.gather(
            *[(client if i % 2 else other).submit(event_id, command) for i in range(50)]
        )
        assert sum(not r.replayed for r in results if isinstance(r, HoldPlaced)) == 1
        assert (await client.snapshot(event_id)).section("A").held == 2
    finally:
        await other.aclose()


async def test_actor_sweeper_publishes_expired_releases(
    client: EngineClient, redis: Redis, event_id: str
) -> None:
    await client.load_inventory(event_id, [SeatedSection("A", 1, 2)])
    async with redis.pubsub() as pubsub:
        await pubsub.subscribe(EventKeys(event_id).channel)
        await pubsub.get_message(timeout=1)
        await client.hold_seats(event_id, "alice", ["A-1-1"], ttl_s=0.1)
        released = None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 5
        while released is None and loop.time() < deadline:
            message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=0.5)
            if (
                message
                and {"seat": "A-1-1", "status": "available"}
                in json.loads(message["data"])["changes"]
            ):
                released = message
    assert released is not None, "the sweeper never published the release"
    snap = await client.snapshot(event_id)
    assert snap.seats == {} and snap.section("A").held == 0


def apply_changes(model: dict[str, Any], changes: list[dict[str, Any]]) -> None:
    for change in changes:
        if "seat" in change:
            if change["status"] == "available":
                model["seats"].pop(change["seat"], None)
            else:
                model["seats"][change["seat"]] = change["status"]
        else:
            model["sections"][change["section"]] = (
                change["available"],
                change["held"],
                change["sold"],
            )


def as_model(snap: Snapshot) -> dict[str, Any]:
    return {
        "seats": dict(snap.seats),
        "sections": {s.code: (s.available, s.held, s.sold) for s in snap.sections},
    }


async def test_change_sets_are_gap_free_and_replay_to_the_inventory(
    client: EngineClient, redis: Redis, event_id: str
) -> None:
    await client.load_inventory(event_id, [SeatedSection("A", 5, 10), GeneralSection("GA", 300)])
    start = await client.snapshot(event_id)
    model = as_model(start)
    rng = random.Random(11)
    async with redis.pubsub() as pubsub:
        await pubsub.subscribe(EventKeys(event_id).channel)
        await pubsub.get_message(timeout=1)

        async def buyer(n: int) -> None:
            for step in range(6):
                ttl = 0.05 if step % 3 == 0 else 60  # some expire and get swept
                try:
                    if rng.random() < 0.5:
                        row, seat = rng.randint(1, 5), rng.randint(1, 9)
                        hold = await client.hold_seats(
                            event_id, f"b{n}", [f"A-{row}-{seat}", f"A-{row}-{seat + 1}"], ttl_s=ttl
                        )
                    else:
                        hold = await client.hold_quantity(
                            event_id, f"b{n}", "GA", rng.randint(1, 3), ttl_s=ttl
                        )
                except SeatsUnavailable:
                    continue
                action = rng.random()
                if action < 0.3:
                    await client.release(event_id, hold.hold_id)
                elif action < 0.6 and ttl > 1:
                    await client.confirm(event_id, hold.hold_id, f"o-{hold.hold_id}")

        await asyncio.gather(*[buyer(n) for n in range(60)])
        # wait for the sweeper to publish every short hold's expiry
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 10
        while await _live_short_holds(redis, event_id):
            assert loop.time() < deadline, "sweeper did not catch up"
            await asyncio.sleep(0.05)
        final = await client.snapshot(event_id)
        versions = []
        while True:
            message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=0.5)
            if message is None:
                break
            change_set = json.loads(message["data"])
            versions.append(change_set["version"])
            apply_changes(model, change_set["changes"])
    assert versions == list(range(start.version + 1, final.version + 1))
    assert model == as_model(final)


async def _live_short_holds(redis: Redis, event_id: str) -> int:
    """Holds still marked held whose expiry is within the test's short TTL."""
    seconds, micros = await redis.time()
    now_ms = int(seconds) * 1000 + int(micros) // 1000
    return int(await redis.zcount(EventKeys(event_id).expiries, "-inf", now_ms + 1000))
