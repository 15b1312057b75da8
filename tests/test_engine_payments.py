"""The engine operations payments rely on: extend, late confirmation, refund.

Most tests call the scripts directly (marked ``lua``, so CI runs them against
the system Redis too); the last ones go through EngineClient and Ray, for the
commands' and outcomes' Python side.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
from redis.asyncio import Redis

from engine.client import EngineClient
from engine.errors import HoldExpired, OrderNotSold, SeatsUnavailable
from engine.model import (
    ConfirmHold,
    ExtendHold,
    HoldPlaced,
    HoldQuantity,
    HoldSeats,
    RefundSale,
    ReleaseHold,
    SaleConfirmed,
    SaleRefunded,
)
from engine.scripts import EventKeys, InventoryScripts
from tests.conftest import SMALL_MAP
from tests.test_lua_contract import loaded, server_ms, state_of, wait_past

__all__ = ["loaded"]  # the fixture, shared with the contract suite

lua = pytest.mark.lua


def hid() -> str:
    return uuid.uuid4().hex


async def one(scripts: InventoryScripts, event_id: str, command: Any) -> dict[str, Any]:
    """Through batch.lua, the way the actor applies every operation."""
    return (await scripts.apply(event_id, [command])).results[0]


async def outbox(redis: Redis, event_id: str) -> list[dict[str, str]]:
    entries = await redis.xrange(EventKeys(event_id).outbox)
    return [{k.decode(): v.decode() for k, v in fields.items()} for _, fields in entries]


async def forget(redis: Redis, event_id: str, hold_id: str) -> None:
    """As if the hold's record had been reclaimed (after a day, or a rebuild)."""
    keys = EventKeys(event_id)
    await redis.hdel(keys.holds, hold_id)
    await redis.zrem(keys.expiries, f"h:{hold_id}", f"g:{hold_id}")


# ---------------------------------------------------------------- extend


@lua
async def test_extend_keeps_a_hold_past_its_expiry_and_never_shortens_it(
    scripts: InventoryScripts, redis: Redis, loaded: str
) -> None:
    hold = hid()
    placed = await one(scripts, loaded, HoldSeats(hold, "c1", ("A-1-1",), 300))
    later = await server_ms(redis) + 60_000
    version = (await scripts.snapshot(loaded)).version
    extended = await one(scripts, loaded, ExtendHold(hold, "c1", later))
    assert extended["ok"] and not extended["replayed"] and extended["status"] == "held"
    assert extended["expires_at_ms"] == later > placed["expires_at_ms"]
    assert extended["seats"] == ["A-1-1"] and extended["quantity"] == 1
    score = await redis.zscore(EventKeys(loaded).expiries, f"h:{hold}")
    assert score == later
    assert (await scripts.snapshot(loaded)).version == version  # availability unchanged
    shorter = await one(scripts, loaded, ExtendHold(hold, "c1", placed["expires_at_ms"]))
    assert shorter["expires_at_ms"] == later  # never shortened
    assert await redis.zscore(EventKeys(loaded).expiries, f"h:{hold}") == later
    await wait_past(redis, placed["expires_at_ms"])
    await scripts.sweep(loaded)  # the sweep goes by the new expiry
    taken = await one(scripts, loaded, HoldSeats(hid(), "c2", ("A-1-1",), 60_000))
    assert taken["code"] == "seats_unavailable"  # still held: the extension counts
    other = await one(scripts, loaded, ExtendHold(hold, "someone-else", later + 1))
    assert other["code"] == "hold_not_found"
    missing = await one(scripts, loaded, ExtendHold(hid(), "c1", later))
    assert missing["code"] == "hold_not_found"
    sold = await one(scripts, loaded, ConfirmHold(hold, "o-ext"))
    assert sold["ok"]
    confirmed = await one(scripts, loaded, ExtendHold(hold, "c1", later + 1))
    assert confirmed["code"] == "already_confirmed" and confirmed["order_id"] == "o-ext"


@lua
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

    released = hid()
    await one(scripts, loaded, HoldQuantity(released, "c1", "FLOOR", 2, 60_000))
    await one(scripts, loaded, ReleaseHold(released, "c1"))
    until = await server_ms(redis) + 120_000
    assert (await one(scripts, loaded, ExtendHold(released, "c1", until)))["code"] == "hold_expired"


# ---------------------------------------------------------------- late confirmation


@lua
async def test_late_confirmation_sells_the_seats_if_they_are_still_free(
    scripts: InventoryScripts, redis: Redis, loaded: str
) -> None:
    hold = hid()
    await one(scripts, loaded, HoldSeats(hold, "c1", ("A-2-1", "A-2-2"), 60_000))
    await one(scripts, loaded, ReleaseHold(hold, "c1"))
    assert (await one(scripts, loaded, ConfirmHold(hold, "o-late", {})))["code"] == "hold_expired"
    version = (await scripts.snapshot(loaded)).version
    sold = await one(scripts, loaded, ConfirmHold(hold, "o-late", {"x": 1}, late=True))
    assert sold["ok"] and not sold["replayed"]
    snapshot = await scripts.snapshot(loaded)
    assert snapshot.seats["A-2-1"] == snapshot.seats["A-2-2"] == "sold"
    assert snapshot.section("A").sold == 2 and snapshot.section("A").held == 0
    assert snapshot.version == version + 1
    keys = EventKeys(loaded)
    assert await redis.hget(keys.seats, "A-2-1") == b"s:o-late"
    assert await redis.hget(keys.customers, "c1:sold") == b"2"
    record = json.loads(await redis.hget(keys.holds, hold))
    assert record["st"] == "confirmed" and record["o"] == "o-late"
    again = await one(scripts, loaded, ConfirmHold(hold, "o-late", {}, late=True))
    assert again["ok"] and again["replayed"]
    other = await one(scripts, loaded, ConfirmHold(hold, "o-other", {}, late=True))
    assert other["code"] == "already_confirmed" and other["order_id"] == "o-late"
    [entry] = await outbox(redis, loaded)  # one sale
    assert entry["type"] == "order_confirmed" and entry["late"] == "1"
    assert entry["order_id"] == "o-late" and entry["customer_id"] == "c1"
    assert entry["seats"] == "A-2-1,A-2-2" and entry["quantity"] == "2"
    assert json.loads(entry["meta"]) == {"x": 1}


@lua
async def test_late_confirmation_of_a_hold_past_its_expiry_before_any_sweep(
    scripts: InventoryScripts, redis: Redis, loaded: str
) -> None:
    hold, taker = hid(), hid()
    placed = await one(scripts, loaded, HoldSeats(hold, "c1", ("A-3-4",), 200))
    other = await one(scripts, loaded, HoldSeats(taker, "c2", ("A-3-3",), 200))
    await wait_past(redis, max(placed["expires_at_ms"], other["expires_at_ms"]))
    # Both holds are still "held" in Redis; the late sale takes its own seat
    # and a seat of someone else's expired hold.
    sold = await one(
        scripts, loaded, ConfirmHold(hold, "o-past", {}, late=True, seats=("A-3-4", "A-3-3"))
    )
    assert sold["ok"]
    snapshot = await scripts.snapshot(loaded)
    assert snapshot.seats["A-3-4"] == "sold" and "A-3-3" not in snapshot.seats  # rec's seats only
    assert snapshot.section("A").held == 0
    late = await one(scripts, loaded, ConfirmHold(taker, "o-taker", {}, late=True))
    assert late["ok"]  # the expired hold of c2 is sold late to its own order too
    assert (await scripts.snapshot(loaded)).seats["A-3-3"] == "sold"
    plain = [e for e in await outbox(redis, loaded) if "late" not in e]
    assert plain == []
    # A plain confirm keeps the old answer and no late field.
    live = hid()
    await one(scripts, loaded, HoldSeats(live, "c3", ("A-1-3",), 60_000))
    assert (await one(scripts, loaded, ConfirmHold(live, "o-plain", {}, late=True)))["ok"]
    entries = {e["order_id"]: e for e in await outbox(redis, loaded)}
    assert "late" not in entries["o-plain"]  # it was still held: an ordinary sale


@lua
async def test_late_confirmation_refuses_seats_someone_else_holds_and_changes_nothing(
    scripts: InventoryScripts, redis: Redis, loaded: str
) -> None:
    late = hid()
    await one(scripts, loaded, HoldSeats(late, "c1", ("A-3-1", "A-3-2"), 60_000))
    await one(scripts, loaded, ReleaseHold(late, "c1"))
    await one(scripts, loaded, HoldSeats(hid(), "c2", ("A-3-1",), 60_000))
    before = await state_of(redis, loaded)
    result = await one(scripts, loaded, ConfirmHold(late, "o-x", {}, late=True))
    assert result["code"] == "seats_unavailable" and result["unavailable"] == ["A-3-1"]
    assert await state_of(redis, loaded) == before
    await forget(redis, loaded, late)  # and from the order's own copy of the seats
    before = await state_of(redis, loaded)
    gone = await one(
        scripts,
        loaded,
        ConfirmHold(late, "o-x", {}, late=True, seats=("A-3-1", "A-3-2"), customer_id="c1"),
    )
    assert gone["code"] == "seats_unavailable" and gone["unavailable"] == ["A-3-1"]
    assert await state_of(redis, loaded) == before


@lua
async def test_late_confirmation_of_a_forgotten_hold_uses_the_orders_copy(
    scripts: InventoryScripts, redis: Redis, loaded: str
) -> None:
    seated, general = hid(), hid()
    await one(scripts, loaded, HoldSeats(seated, "c1", ("A-2-3",), 60_000))
    await one(scripts, loaded, HoldQuantity(general, "c1", "FLOOR", 3, 60_000))
    for hold in (seated, general):
        await one(scripts, loaded, ReleaseHold(hold, "c1"))
        await forget(redis, loaded, hold)
    nothing = await one(scripts, loaded, ConfirmHold(seated, "o-s", {}, late=True))
    assert nothing["code"] == "invalid_request"  # nothing to say what was bought
    dup = ConfirmHold(seated, "o-s", {}, late=True, seats=("A-2-3", "A-2-3"), customer_id="c1")
    assert (await one(scripts, loaded, dup))["code"] == "duplicate_seat"
    seats = ConfirmHold(seated, "o-s", {}, late=True, seats=("A-2-3",), customer_id="c1")
    assert (await one(scripts, loaded, seats))["ok"]
    places = ConfirmHold(
        general, "o-g", {}, late=True, section="FLOOR", quantity=3, customer_id="c1"
    )
    assert (await one(scripts, loaded, places))["ok"]
    snapshot = await scripts.snapshot(loaded)
    assert snapshot.seats["A-2-3"] == "sold" and snapshot.section("FLOOR").sold == 3
    assert await redis.hget(EventKeys(loaded).customers, "c1:sold") == b"4"
    entries = {e["order_id"]: e for e in await outbox(redis, loaded)}
    assert entries["o-g"]["section"] == "FLOOR" and entries["o-g"]["quantity"] == "3"
    assert entries["o-s"]["customer_id"] == "c1" and entries["o-s"]["late"] == "1"
    assert (await one(scripts, loaded, places))["replayed"]  # the new record answers retries


@lua
async def test_late_general_admission_is_sold_out_when_the_places_went(
    scripts: InventoryScripts, redis: Redis, loaded: str
) -> None:
    late = hid()
    await one(scripts, loaded, HoldQuantity(late, "c1", "FLOOR", 5, 60_000))
    await one(scripts, loaded, ReleaseHold(late, "c1"))
    other = hid()
    await one(scripts, loaded, HoldQuantity(other, "c2", "FLOOR", 18, 60_000))  # 20 in all
    before = await state_of(redis, loaded)
    result = await one(scripts, loaded, ConfirmHold(late, "o-ga", {}, late=True))
    assert result["code"] == "sold_out" and result["available"] == 2
    assert await state_of(redis, loaded) == before
    await one(scripts, loaded, ReleaseHold(other, "c2"))
    sold = await one(scripts, loaded, ConfirmHold(late, "o-ga", {}, late=True))
    assert sold["ok"]
    floor = (await scripts.snapshot(loaded)).section("FLOOR")
    assert (floor.sold, floor.held, floor.available) == (5, 0, 15)


@lua
async def test_late_confirmation_on_a_cancelled_event_is_refused(
    scripts: InventoryScripts, redis: Redis, loaded: str
) -> None:
    hold = hid()
    await one(scripts, loaded, HoldSeats(hold, "c1", ("A-1-4",), 60_000))
    await one(scripts, loaded, ReleaseHold(hold, "c1"))
    await scripts.set_status(loaded, "cancelled")
    result = await one(scripts, loaded, ConfirmHold(hold, "o-c", {}, late=True))
    assert result["code"] == "event_not_on_sale"
    assert "A-1-4" not in (await scripts.snapshot(loaded)).seats


# ---------------------------------------------------------------- refund


@lua
async def test_refund_puts_the_seats_back_once_and_tells_the_outbox(
    scripts: InventoryScripts, redis: Redis, loaded: str
) -> None:
    hold = hid()
    await one(scripts, loaded, HoldSeats(hold, "c1", ("A-3-3", "A-3-4"), 60_000))
    await one(scripts, loaded, ConfirmHold(hold, "o-r", {}))
    version = (await scripts.snapshot(loaded)).version
    pubsub = redis.pubsub()
    await pubsub.subscribe(EventKeys(loaded).channel)
    await pubsub.get_message(timeout=1)  # the subscribe confirmation
    refund = await one(scripts, loaded, RefundSale("o-r", hold, ("A-3-3", "A-3-4"), None, 2))
    assert refund == {"ok": True, "order_id": "o-r", "replayed": False}
    snapshot = await scripts.snapshot(loaded)
    assert "A-3-3" not in snapshot.seats and "A-3-4" not in snapshot.seats
    assert snapshot.version == version + 1 and snapshot.section("A").sold == 0
    published = await pubsub.get_message(timeout=2)
    assert published is not None
    message = json.loads(published["data"])
    assert message["version"] == version + 1
    assert {"seat": "A-3-3", "status": "available"} in message["changes"]
    assert {"section": "A", "available": 12, "held": 0, "sold": 0} in message["changes"]
    await pubsub.aclose()
    keys = EventKeys(loaded)
    assert await redis.hget(keys.customers, "c1:sold") == b"0"
    assert json.loads(await redis.hget(keys.holds, hold))["st"] == "refunded"
    before = await state_of(redis, loaded)
    again = await one(scripts, loaded, RefundSale("o-r", hold, ("A-3-3",), None, 1))
    assert again["ok"] and again["replayed"]
    assert await state_of(redis, loaded) == before  # nothing twice
    confirmed, refunded = await outbox(redis, loaded)
    assert confirmed["type"] == "order_confirmed"
    assert refunded["type"] == "order_refunded" and refunded["order_id"] == "o-r"
    assert refunded["hold_id"] == hold and refunded["seats"] == "A-3-3,A-3-4"
    assert refunded["quantity"] == "2" and refunded["section"] == ""
    assert refunded["event_id"] == loaded and int(refunded["refunded_at_ms"]) > 0
    late = await one(scripts, loaded, ConfirmHold(hold, "o-r", {}, late=True))
    assert late["replayed"] and "A-3-3" not in (await scripts.snapshot(loaded)).seats
    resold = await one(scripts, loaded, HoldSeats(hid(), "c2", ("A-3-3",), 60_000))
    assert resold["ok"]  # back on sale


@lua
async def test_refund_of_general_admission_even_after_a_cancel(
    scripts: InventoryScripts, redis: Redis, loaded: str
) -> None:
    hold = hid()
    await one(scripts, loaded, HoldQuantity(hold, "c1", "FLOOR", 4, 60_000))
    await one(scripts, loaded, ConfirmHold(hold, "o-ga", {}))
    await scripts.set_status(loaded, "cancelled")  # refunds go on after a cancel
    refund = await one(scripts, loaded, RefundSale("o-ga", hold, None, "FLOOR", 4))
    assert refund["ok"] and not refund["replayed"]
    floor = (await scripts.snapshot(loaded)).section("FLOOR")
    assert (floor.sold, floor.available) == (0, 20)
    [_, entry] = await outbox(redis, loaded)
    assert (entry["section"], entry["quantity"], entry["seats"]) == ("FLOOR", "4", "")


@lua
async def test_refund_of_general_admission_without_the_holds_record(
    scripts: InventoryScripts, redis: Redis, loaded: str
) -> None:
    hold = hid()
    await one(scripts, loaded, HoldQuantity(hold, "c1", "FLOOR", 3, 60_000))
    await one(scripts, loaded, ConfirmHold(hold, "o-old", {}))
    await forget(redis, loaded, hold)
    before = await state_of(redis, loaded)
    unvouched = RefundSale("o-old", hold, None, "FLOOR", 3, sold_confirmed=False)
    assert (await one(scripts, loaded, unvouched))["code"] == "order_not_sold"
    assert await state_of(redis, loaded) == before
    vouched = await one(scripts, loaded, RefundSale("o-old", hold, None, "FLOOR", 3))
    assert vouched["ok"]
    assert (await scripts.snapshot(loaded)).section("FLOOR").sold == 0


@lua
async def test_refund_of_an_order_never_sold_is_refused_and_changes_nothing(
    scripts: InventoryScripts, redis: Redis, loaded: str
) -> None:
    held = hid()
    await one(scripts, loaded, HoldSeats(held, "c1", ("A-1-4",), 60_000))
    sold = hid()
    await one(scripts, loaded, HoldSeats(sold, "c2", ("A-1-3",), 60_000))
    await one(scripts, loaded, ConfirmHold(sold, "o-real", {}))
    before = await state_of(redis, loaded)
    for refund in (
        RefundSale("o-none", hid(), ("A-1-4",), None, 1),  # held, not sold
        RefundSale("o-none", hid(), ("A-1-3",), None, 1),  # sold, to another order
        RefundSale("o-none", sold, ("A-1-3",), None, 1),  # that order's hold
        RefundSale("o-none", held, None, "FLOOR", 1, sold_confirmed=False),
    ):
        result = await one(scripts, loaded, refund)
        assert result["code"] == "order_not_sold", refund
    assert await state_of(redis, loaded) == before


@lua
async def test_reclaiming_old_records_keeps_refund_markers(
    scripts: InventoryScripts, redis: Redis, loaded: str
) -> None:
    hold = hid()
    await one(scripts, loaded, HoldSeats(hold, "c1", ("A-2-4",), 60_000))
    await one(scripts, loaded, ConfirmHold(hold, "o-k", {}))
    await one(scripts, loaded, RefundSale("o-k", hold, ("A-2-4",), None, 1))
    keys = EventKeys(loaded)
    await redis.zadd(keys.expiries, {f"g:{hold}": 0})  # the record's day is over
    await scripts.sweep(loaded)
    assert await redis.hget(keys.holds, hold) is None  # the record is forgotten
    assert await redis.hexists(keys.holds, "refund:o-k")  # the marker is not
    again = await one(scripts, loaded, RefundSale("o-k", hold, ("A-2-4",), None, 1))
    assert again["replayed"]
    spoof = await one(scripts, loaded, HoldSeats("refund:o-k", "c1", ("A-1-1",), 60_000))
    assert spoof["code"] == "invalid_request"  # no hold may take a marker's name
    assert await redis.hexists(keys.holds, "refund:o-k")


# ---------------------------------------------------------------- through the client


async def test_payment_commands_through_the_engine_client(
    client: EngineClient, event_id: str
) -> None:
    await client.load_inventory(event_id, SMALL_MAP)
    hold = await client.hold_seats(event_id, "buyer", ["A-1-1"], ttl_s=60)
    until_ms = hold.expires_at_ms + 60_000
    extended = await client.extend(event_id, hold.hold_id, "buyer", until_ms)
    assert isinstance(extended, HoldPlaced) and extended.expires_at_ms == until_ms
    assert not extended.replayed and extended.seats == ("A-1-1",)
    await client.release(event_id, hold.hold_id, "buyer")
    with pytest.raises(HoldExpired):
        await client.extend(event_id, hold.hold_id, "buyer", until_ms + 1)
    with pytest.raises(HoldExpired):
        await client.confirm(event_id, hold.hold_id, "o-1")
    sale = await client.confirm(event_id, hold.hold_id, "o-1", {"a": 1}, late=True)
    assert sale == SaleConfirmed(hold.hold_id, "o-1", replayed=False)

    slow = await client.hold_seats(event_id, "slow", ["A-1-2"], ttl_s=60)
    await client.release(event_id, slow.hold_id)
    await client.hold_seats(event_id, "fast", ["A-1-2"], ttl_s=60)
    with pytest.raises(SeatsUnavailable) as refused:
        await client.confirm(event_id, slow.hold_id, "o-2", late=True)
    assert refused.value.context["unavailable"] == ["A-1-2"]

    refund = await client.refund(event_id, "o-1", hold.hold_id, seats=["A-1-1"], quantity=1)
    assert refund == SaleRefunded("o-1", replayed=False)
    assert (await client.refund(event_id, "o-1", hold.hold_id)).replayed
    with pytest.raises(OrderNotSold):
        await client.refund(event_id, "o-nobody", "h-nobody", seats=["A-1-3"], quantity=1)
    assert "A-1-1" not in (await client.snapshot(event_id)).seats
