"""The Redis/Lua contract: what every script guarantees, on any Redis backend.

No Ray here: these call the scripts directly, as two actors of one event
would in a split brain (DESIGN rule 1). CI runs this file against embedded
Valkey and against the system Redis 7.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import pytest
from redis.asyncio import Redis

from engine.model import (
    ConfirmHold,
    GeneralSection,
    HoldQuantity,
    HoldSeats,
    ReleaseHold,
    SeatedSection,
)
from engine.scripts import EventKeys, InventoryScripts
from tests.conftest import SMALL_MAP

pytestmark = pytest.mark.lua


def hid() -> str:
    return uuid.uuid4().hex


async def one(scripts: InventoryScripts, event_id: str, command: Any) -> dict[str, Any]:
    return (await scripts.apply_one(event_id, command)).results[0]


async def state_of(redis: Redis, event_id: str) -> dict[str, Any]:
    """Every key of the event, for before/after comparisons."""
    keys = EventKeys(event_id)
    return {
        "meta": await redis.hgetall(keys.meta),
        "seats": await redis.hgetall(keys.seats),
        "sections": await redis.hgetall(keys.sections),
        "holds": await redis.hgetall(keys.holds),
        "expiries": await redis.zrange(keys.expiries, 0, -1, withscores=True),
        "customers": await redis.hgetall(keys.customers),
        "outbox": await redis.xlen(keys.outbox),
    }


async def server_ms(redis: Redis) -> int:
    seconds, micros = await redis.time()
    return int(seconds) * 1000 + int(micros) // 1000


async def wait_past(redis: Redis, when_ms: int, deadline_s: float = 5.0) -> None:
    """Waits until the server clock passes when_ms (holds expire by that clock)."""
    loop = asyncio.get_running_loop()
    end = loop.time() + deadline_s
    while await server_ms(redis) <= when_ms:
        assert loop.time() < end, "server clock did not pass the expiry"
        await asyncio.sleep(0.01)


@pytest.fixture
async def loaded(scripts: InventoryScripts, event_id: str) -> str:
    assert await scripts.load_inventory(event_id, SMALL_MAP, max_per_customer=0)
    return event_id


async def test_load_inventory_is_idempotent_and_lays_out_seat_ids(
    scripts: InventoryScripts, redis: Redis, event_id: str
) -> None:
    assert await scripts.load_inventory(event_id, SMALL_MAP) is True
    before = await state_of(redis, event_id)
    assert await scripts.load_inventory(event_id, [GeneralSection("X", 5)]) is False
    assert await state_of(redis, event_id) == before
    snap = await scripts.snapshot(event_id)
    assert snap.version == 1 and snap.seats == {}
    assert [(s.code, s.kind, s.capacity, s.available) for s in snap.sections] == [
        ("A", "seated", 12, 12),
        ("FLOOR", "general", 20, 20),
    ]
    seat_ids = {k.decode() for k in before["seats"]}
    assert seat_ids == set(SeatedSection("A", 3, 4).seat_ids())
    assert "A-3-4" in seat_ids and "A-4-1" not in seat_ids


async def test_invalid_inventory_is_refused_and_writes_nothing(
    scripts: InventoryScripts, redis: Redis, event_id: str
) -> None:
    from engine.errors import InvalidInventory

    for bad in (
        [GeneralSection("A-B", 5)],
        [GeneralSection("A", 0)],
        [SeatedSection("A", 2, 2), GeneralSection("A", 3)],
    ):
        with pytest.raises(InvalidInventory):
            await scripts.load_inventory(event_id, bad)
    assert await redis.exists(*EventKeys(event_id).inventory_keys()) == 0


async def test_hold_of_seats_is_all_or_nothing(scripts: InventoryScripts, loaded: str) -> None:
    first = await one(scripts, loaded, HoldSeats(hid(), "alice", ("A-1-2",), 60_000))
    assert first["ok"]
    both = await one(scripts, loaded, HoldSeats(hid(), "bob", ("A-1-1", "A-1-2"), 60_000))
    assert both == {"ok": False, "code": "seats_unavailable", "unavailable": ["A-1-2"]}
    snap = await scripts.snapshot(loaded)
    assert snap.seats == {"A-1-2": "held"}  # A-1-1 was not taken by the failed hold
    assert snap.section("A").held == 1


@pytest.mark.parametrize(
    ("command", "code"),
    [
        (HoldSeats("h", "c", ("A-1-1", "A-9-9"), 60_000), "unknown_seat"),
        (HoldSeats("h", "c", ("A-1-1", "A-1-1"), 60_000), "duplicate_seat"),
        (HoldSeats("h", "c", (), 60_000), "invalid_request"),
        (HoldQuantity("h", "c", "FLOOR", 0, 60_000), "invalid_quantity"),
        (HoldQuantity("h", "c", "FLOOR", -2, 60_000), "invalid_quantity"),
        (HoldQuantity("h", "c", "A", 2, 60_000), "wrong_section_kind"),
        (HoldQuantity("h", "c", "NOPE", 2, 60_000), "unknown_section"),
        (HoldSeats("h", "c", ("FLOOR-1-1",), 60_000), "unknown_seat"),
        (HoldQuantity("h", "c", "FLOOR", 2, 0), "invalid_request"),
        (HoldQuantity("h", "c:x", "FLOOR", 2, 60_000), "invalid_request"),
    ],
)
async def test_malformed_hold_gets_its_code_and_changes_nothing(
    scripts: InventoryScripts, redis: Redis, loaded: str, command: Any, code: str
) -> None:
    await one(scripts, loaded, HoldSeats(hid(), "someone", ("A-2-2",), 60_000))
    before = await state_of(redis, loaded)
    result = await one(scripts, loaded, command)
    assert result["ok"] is False and result["code"] == code
    assert await state_of(redis, loaded) == before


async def test_event_not_on_sale_refuses_holds(scripts: InventoryScripts, loaded: str) -> None:
    assert await scripts.set_status(loaded, "closed") == "on_sale"
    result = await one(scripts, loaded, HoldQuantity(hid(), "c", "FLOOR", 1, 60_000))
    assert result["code"] == "event_not_on_sale"
    missing = await one(scripts, "no-such-event", HoldQuantity(hid(), "c", "FLOOR", 1, 60_000))
    assert missing["code"] == "event_not_found"


async def test_repeated_hold_id_is_answered_not_applied_twice(
    scripts: InventoryScripts, redis: Redis, loaded: str
) -> None:
    command = HoldQuantity(hid(), "alice", "FLOOR", 3, 60_000)
    first = await one(scripts, loaded, command)
    after_first = await state_of(redis, loaded)
    again = await one(scripts, loaded, command)
    assert again == {**first, "replayed": True}
    assert await state_of(redis, loaded) == after_first
    assert (await scripts.snapshot(loaded)).section("FLOOR").held == 3
    stolen = await one(scripts, loaded, HoldQuantity(command.hold_id, "mallory", "FLOOR", 1, 1))
    assert stolen["code"] == "hold_id_conflict"


async def test_release_frees_at_once_and_is_idempotent(
    scripts: InventoryScripts, loaded: str
) -> None:
    held = await one(scripts, loaded, HoldSeats(hid(), "alice", ("A-1-1", "A-1-2"), 60_000))
    wrong_owner = await one(scripts, loaded, ReleaseHold(held["hold_id"], "bob"))
    assert wrong_owner["code"] == "hold_not_found"
    released = await one(scripts, loaded, ReleaseHold(held["hold_id"], "alice"))
    assert released == {
        "ok": True,
        "hold_id": held["hold_id"],
        "released": True,
        "status": "released",
    }
    assert (await scripts.snapshot(loaded)).seats == {}
    again = await one(scripts, loaded, ReleaseHold(held["hold_id"], "alice"))
    assert again["ok"] and again["released"] is False
    retaken = await one(scripts, loaded, HoldSeats(hid(), "bob", ("A-1-1",), 60_000))
    assert retaken["ok"]


async def test_confirm_sells_and_appends_one_outbox_entry(
    scripts: InventoryScripts, redis: Redis, loaded: str
) -> None:
    held = await one(scripts, loaded, HoldSeats(hid(), "alice", ("A-2-1", "A-2-2"), 60_000))
    confirm = ConfirmHold(held["hold_id"], "order-1", {"amount_cents": 9000})
    first = await one(scripts, loaded, confirm)
    assert first["ok"] and first["replayed"] is False
    again = await one(scripts, loaded, confirm)
    assert again["ok"] and again["replayed"] is True
    other = await one(scripts, loaded, ConfirmHold(held["hold_id"], "order-2"))
    assert other["code"] == "already_confirmed"
    entries = await redis.xrange(EventKeys(loaded).outbox)
    assert len(entries) == 1
    fields = {k.decode(): v.decode() for k, v in entries[0][1].items()}
    assert fields["order_id"] == "order-1" and fields["seats"] == "A-2-1,A-2-2"
    assert fields["event_id"] == loaded and fields["customer_id"] == "alice"
    assert json.loads(fields["meta"]) == {"amount_cents": 9000}
    snap = await scripts.snapshot(loaded)
    assert snap.seats == {"A-2-1": "sold", "A-2-2": "sold"}
    assert (snap.section("A").held, snap.section("A").sold) == (0, 2)
    released = await one(scripts, loaded, ReleaseHold(held["hold_id"]))
    assert released["code"] == "already_confirmed"


async def test_expired_hold_frees_seat_without_sweeper(
    scripts: InventoryScripts, redis: Redis, loaded: str
) -> None:
    short = await one(scripts, loaded, HoldSeats(hid(), "alice", ("A-3-3",), 50))
    taken = await one(scripts, loaded, HoldSeats(hid(), "bob", ("A-3-3",), 60_000))
    assert taken["code"] == "seats_unavailable"  # live until its expiry
    await wait_past(redis, short["expires_at_ms"])
    assert (await scripts.snapshot(loaded)).seats == {"A-3-3": "held"}  # nobody swept
    retaken = await one(scripts, loaded, HoldSeats(hid(), "bob", ("A-3-3",), 60_000))
    assert retaken["ok"]
    confirm = await one(scripts, loaded, ConfirmHold(short["hold_id"], "late-order"))
    assert confirm["code"] == "hold_expired"
    snap = await scripts.snapshot(loaded)
    assert snap.section("A").held == 1 and snap.seats == {"A-3-3": "held"}


async def test_expired_general_admission_hold_is_free_without_sweeper(
    scripts: InventoryScripts, redis: Redis, loaded: str
) -> None:
    short = await one(scripts, loaded, HoldQuantity(hid(), "alice", "FLOOR", 20, 50))
    assert (await one(scripts, loaded, HoldQuantity(hid(), "bob", "FLOOR", 1, 60_000)))[
        "code"
    ] == "sold_out"
    await wait_past(redis, short["expires_at_ms"])
    late = await one(scripts, loaded, ConfirmHold(short["hold_id"], "late-order"))
    assert late["code"] == "hold_expired"  # paying after expiry sells nothing
    assert (await one(scripts, loaded, HoldQuantity(hid(), "bob", "FLOOR", 20, 60_000)))["ok"]
    assert (await scripts.snapshot(loaded)).section("FLOOR").sold == 0


async def test_sweep_publishes_the_release(
    scripts: InventoryScripts, redis: Redis, loaded: str
) -> None:
    short = await one(scripts, loaded, HoldSeats(hid(), "alice", ("A-1-4",), 50))
    await wait_past(redis, short["expires_at_ms"])
    async with redis.pubsub() as pubsub:
        await pubsub.subscribe(EventKeys(loaded).channel)
        assert await pubsub.get_message(timeout=1)  # subscribe confirmation
        swept = await scripts.sweep(loaded)
        message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=2)
    assert swept.handled == 1 and swept.more is False
    assert message is not None
    change_set = json.loads(message["data"])
    assert change_set["version"] == swept.version
    assert {"seat": "A-1-4", "status": "available"} in change_set["changes"]
    assert {"section": "A", "available": 12, "held": 0, "sold": 0} in change_set["changes"]
    again = await scripts.sweep(loaded)
    assert again.handled == 0 and again.version == swept.version  # nothing left, no bump


async def test_customer_limit_counts_live_holds_and_purchases(
    scripts: InventoryScripts, event_id: str
) -> None:
    await scripts.load_inventory(event_id, SMALL_MAP, max_per_customer=4)
    a = await one(scripts, event_id, HoldSeats(hid(), "alice", ("A-1-1", "A-1-2"), 60_000))
    await one(scripts, event_id, ConfirmHold(a["hold_id"], "o-1"))
    await one(scripts, event_id, HoldQuantity(hid(), "alice", "FLOOR", 1, 60_000))
    over = await one(scripts, event_id, HoldQuantity(hid(), "alice", "FLOOR", 2, 60_000))
    assert over == {"ok": False, "code": "customer_limit", "limit": 4, "held": 1, "sold": 2}
    assert (await one(scripts, event_id, HoldQuantity(hid(), "alice", "FLOOR", 1, 60_000)))["ok"]
    assert (await one(scripts, event_id, HoldQuantity(hid(), "bob", "FLOOR", 4, 60_000)))["ok"]


async def test_batch_applies_in_order_with_one_result_each_and_one_version(
    scripts: InventoryScripts, loaded: str
) -> None:
    h1, h2 = hid(), hid()
    batch = [
        HoldSeats(h1, "alice", ("A-1-1",), 60_000),
        HoldSeats(h2, "bob", ("A-1-1",), 60_000),  # loses to the hold before it
        ReleaseHold(h1, "alice"),
        HoldSeats(h2 + "x", "bob", ("A-1-1",), 60_000),  # free again after the release
        ConfirmHold(h2 + "x", "order-b"),
    ]
    result = await scripts.apply(loaded, batch)
    assert [r["ok"] for r in result.results] == [True, False, True, True, True]
    assert result.results[1]["code"] == "seats_unavailable"
    assert result.version == 2  # one change set for the whole batch
    assert (await scripts.snapshot(loaded)).seats == {"A-1-1": "sold"}


async def test_scripts_alone_let_exactly_one_of_many_connections_take_a_seat(
    scripts: InventoryScripts, redis_url: str, event_id: str
) -> None:
    """Rule 1: two actors (here: 50 connections) racing for one seat still sell it once."""
    await scripts.load_inventory(event_id, [SeatedSection("S", 1, 1)])
    clients = [Redis.from_url(redis_url) for _ in range(50)]
    try:
        racers = [InventoryScripts(c) for c in clients]
        results = await asyncio.gather(
            *[
                r.apply_one(event_id, HoldSeats(hid(), f"c{i}", ("S-1-1",), 60_000))
                for i, r in enumerate(racers * 4)
            ]
        )
    finally:
        for c in clients:
            await c.aclose()
    winners = [r.results[0] for r in results if r.results[0]["ok"]]
    assert len(winners) == 1
