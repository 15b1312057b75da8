"""The engine operations payments rely on: extend, late confirmation, refund.

Scripts only, like the rest of the Lua contract (so CI runs these against the
system Redis too).
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
from redis.asyncio import Redis

from engine.model import (
    ConfirmHold,
    ExtendHold,
    HoldQuantity,
    HoldSeats,
    RefundSale,
    ReleaseHold,
)
from engine.scripts import EventKeys, InventoryScripts
from tests.test_lua_contract import loaded, server_ms, state_of, wait_past

pytestmark = pytest.mark.lua
__all__ = ["loaded"]  # the fixture, shared with the contract suite


def hid() -> str:
    return uuid.uuid4().hex


async def one(scripts: InventoryScripts, event_id: str, command: Any) -> dict[str, Any]:
    """Through batch.lua, the way the actor applies every operation."""
    return (await scripts.apply(event_id, [command])).results[0]


async def test_extend_keeps_a_hold_past_its_expiry_and_never_shortens_it(
    scripts: InventoryScripts, redis: Redis, loaded: str
) -> None:
    hold = hid()
    placed = await one(scripts, loaded, HoldSeats(hold, "c1", ("A-1-1",), 300))
    later = await server_ms(redis) + 60_000
    extended = await one(scripts, loaded, ExtendHold(hold, "c1", later))
    assert extended["ok"] and extended["expires_at_ms"] == later > placed["expires_at_ms"]
    shorter = await one(scripts, loaded, ExtendHold(hold, "c1", placed["expires_at_ms"]))
    assert shorter["expires_at_ms"] == later  # never shortened
    await wait_past(redis, placed["expires_at_ms"])
    taken = await one(scripts, loaded, HoldSeats(hid(), "c2", ("A-1-1",), 60_000))
    assert taken["code"] == "seats_unavailable"  # still held: the extension counts
    other = await one(scripts, loaded, ExtendHold(hold, "someone else", later + 1))
    assert other["code"] == "hold_not_found"


async def test_extend_cannot_revive_a_lapsed_hold(
    scripts: InventoryScripts, redis: Redis, loaded: str
) -> None:
    hold = hid()
    placed = await one(scripts, loaded, HoldSeats(hold, "c1", ("A-1-2",), 200))
    await wait_past(redis, placed["expires_at_ms"])
    await scripts.sweep(loaded)  # any script call makes the lapse visible; do it first
    before = await state_of(redis, loaded)
    result = await one(scripts, loaded, ExtendHold(hold, "c1", placed["expires_at_ms"] + 60_000))
    assert result["code"] == "hold_expired"
    assert await state_of(redis, loaded) == before


async def test_late_confirmation_sells_the_seats_if_they_are_still_free(
    scripts: InventoryScripts, redis: Redis, loaded: str
) -> None:
    hold = hid()
    await one(scripts, loaded, HoldSeats(hold, "c1", ("A-2-1", "A-2-2"), 60_000))
    await one(scripts, loaded, ReleaseHold(hold, "c1"))
    assert (await one(scripts, loaded, ConfirmHold(hold, "o-late", {})))["code"] == "hold_expired"
    sold = await one(scripts, loaded, ConfirmHold(hold, "o-late", {}, late=True, customer_id="c1"))
    assert sold["ok"] and not sold["replayed"]
    snapshot = await scripts.snapshot(loaded)
    assert snapshot.seats["A-2-1"] == snapshot.seats["A-2-2"] == "sold"
    again = await one(scripts, loaded, ConfirmHold(hold, "o-late", {}, late=True))
    assert again["ok"] and again["replayed"]
    entries = await redis.xrange(EventKeys(loaded).outbox)
    assert [f[b"order_id"] for _, f in entries] == [b"o-late"]  # one sale


async def test_late_confirmation_refuses_seats_someone_else_holds_and_changes_nothing(
    scripts: InventoryScripts, redis: Redis, loaded: str
) -> None:
    late = hid()
    await one(scripts, loaded, HoldSeats(late, "c1", ("A-3-1",), 60_000))
    await one(scripts, loaded, ReleaseHold(late, "c1"))
    await one(scripts, loaded, HoldSeats(hid(), "c2", ("A-3-1",), 60_000))
    before = await state_of(redis, loaded)
    result = await one(scripts, loaded, ConfirmHold(late, "o-x", {}, late=True))
    assert result["code"] == "seats_unavailable" and result["unavailable"] == ["A-3-1"]
    assert await state_of(redis, loaded) == before


async def test_late_general_admission_is_sold_out_when_the_places_went(
    scripts: InventoryScripts, redis: Redis, loaded: str
) -> None:
    late = hid()
    await one(scripts, loaded, HoldQuantity(late, "c1", "FLOOR", 5, 60_000))
    await one(scripts, loaded, ReleaseHold(late, "c1"))
    await one(scripts, loaded, HoldQuantity(hid(), "c2", "FLOOR", 18, 60_000))  # 20 in all
    before = await state_of(redis, loaded)
    result = await one(scripts, loaded, ConfirmHold(late, "o-ga", {}, late=True))
    assert result["code"] == "sold_out"
    assert await state_of(redis, loaded) == before


async def test_refund_puts_the_seats_back_once_and_tells_the_outbox(
    scripts: InventoryScripts, redis: Redis, loaded: str
) -> None:
    hold = hid()
    await one(scripts, loaded, HoldSeats(hold, "c1", ("A-3-3",), 60_000))
    await one(scripts, loaded, ConfirmHold(hold, "o-r", {}))
    version = (await scripts.snapshot(loaded)).version
    pubsub = redis.pubsub()
    await pubsub.subscribe(EventKeys(loaded).channel)
    await pubsub.get_message(timeout=1)  # the subscribe confirmation
    refund = await one(scripts, loaded, RefundSale("o-r", hold, ("A-3-3",), None, 1))
    assert refund["ok"] and not refund["replayed"]
    snapshot = await scripts.snapshot(loaded)
    assert "A-3-3" not in snapshot.seats and snapshot.version == version + 1
    published = await pubsub.get_message(timeout=2)
    assert published is not None
    assert {"seat": "A-3-3", "status": "available"} in json.loads(published["data"])["changes"]
    await pubsub.aclose()
    before = await state_of(redis, loaded)
    again = await one(scripts, loaded, RefundSale("o-r", hold, ("A-3-3",), None, 1))
    assert again["ok"] and again["replayed"]
    assert await state_of(redis, loaded) == before  # nothing twice
    types = [f[b"type"] for _, f in await redis.xrange(EventKeys(loaded).outbox)]
    assert types == [b"order_confirmed", b"order_refunded"]
    resold = await one(scripts, loaded, HoldSeats(hid(), "c2", ("A-3-3",), 60_000))
    assert resold["ok"]  # back on sale


async def test_refund_of_an_order_never_sold_is_refused_and_changes_nothing(
    scripts: InventoryScripts, redis: Redis, loaded: str
) -> None:
    await one(scripts, loaded, HoldSeats(hid(), "c1", ("A-1-4",), 60_000))
    before = await state_of(redis, loaded)
    result = await one(scripts, loaded, RefundSale("o-none", hid(), ("A-1-4",), None, 1))
    assert result["code"] == "order_not_sold"
    assert await state_of(redis, loaded) == before
