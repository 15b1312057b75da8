"""Orders in the engine, at the script level: checkout's order recorded in
its hold's record with its outbox entry, ended once, noted; and the writer,
which lands every mix of an order's entries on the same rows whatever order
they arrive in (several writers take entries of one stream in turn)."""

from __future__ import annotations

import itertools
import json
import uuid
from datetime import UTC, datetime

import asyncpg
import pytest
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine

from engine.model import ConfirmHold, EndOrder, HoldSeats, HoldView, NotePayment, PlaceOrder
from engine.outbox import OrderConfirmed, OrderEnded, OrderPlaced
from engine.scripts import EventKeys, InventoryScripts
from persistence.events import EventDraft, SectionSpec
from persistence.tickets import issued
from persistence.writer import Entry, write_entries
from sales import catalog
from sales.vocabulary import SectionKind
from tests.test_engine_payments import one, outbox
from tests.test_lua_contract import loaded, server_ms

__all__ = ["loaded"]
lua = pytest.mark.lua

ITEMS = ({"seat": "A-1-1", "section": "A", "quantity": 1, "price_cents": 4500},)


def place(hold: str, order: str, until_ms: int, customer: str = "c1") -> PlaceOrder:
    return PlaceOrder(hold, customer, order, until_ms, 4500, "EUR", ITEMS, "pi_1", "stripe")


async def view(scripts: InventoryScripts, event_id: str, hold: str) -> HoldView:
    found = await scripts.hold(event_id, hold)
    assert found is not None
    return found


@lua
async def test_checkout_records_the_order_in_its_hold_keeps_the_hold_and_writes_the_outbox(
    scripts: InventoryScripts, redis: Redis, loaded: str
) -> None:
    hold, order = uuid.uuid4().hex, "or_" + uuid.uuid4().hex
    placed = await one(scripts, loaded, HoldSeats(hold, "c1", ("A-1-1",), 300))
    until = await server_ms(redis) + 60_000
    recorded = await one(scripts, loaded, place(hold, order, until))
    assert recorded["ok"] and recorded["expires_at_ms"] == until > placed["expires_at_ms"]
    seen = await view(scripts, loaded, hold)
    assert seen.order is not None and seen.order.order_id == order
    assert (seen.order.amount_cents, seen.order.payment_intent) == (4500, "pi_1")
    assert seen.order.payment_status == "pending" and seen.order.ended is None
    [entry] = [e for e in await outbox(redis, loaded) if e["type"] == "order_placed"]
    assert (entry["order_id"], entry["hold_id"], entry["customer_id"]) == (order, hold, "c1")
    assert json.loads(entry["items"]) == list(ITEMS) and entry["expires_at_ms"] == str(until)
    again = await one(scripts, loaded, place(hold, "or_other", until))
    assert (again["ok"], again["code"], again["order_id"]) == (False, "order_exists", order)
    stranger = await one(scripts, loaded, place(hold, "or_x", until, customer="c2"))
    assert stranger["code"] == "hold_not_found"


@lua
async def test_a_paid_order_reads_paid_in_its_hold_and_cannot_be_ended(
    scripts: InventoryScripts, redis: Redis, loaded: str
) -> None:
    hold, order = uuid.uuid4().hex, "or_" + uuid.uuid4().hex
    await one(scripts, loaded, HoldSeats(hold, "c1", ("A-1-2",), 300))
    await one(scripts, loaded, place(hold, order, await server_ms(redis) + 60_000))
    assert (await one(scripts, loaded, ConfirmHold(hold, order, {})))["ok"]
    seen = await view(scripts, loaded, hold)
    assert seen.order_id == order and seen.sold_at_ms is not None
    assert seen.order is not None and seen.order.payment_status == "succeeded"
    ended = await one(scripts, loaded, EndOrder(hold, order, "cancelled", "payment_canceled"))
    assert ended["code"] == "already_confirmed"


@lua
async def test_an_ended_order_lets_its_hold_go_once(
    scripts: InventoryScripts, redis: Redis, loaded: str
) -> None:
    hold, order = uuid.uuid4().hex, "or_" + uuid.uuid4().hex
    await one(scripts, loaded, HoldSeats(hold, "c1", ("A-1-3",), 300))
    await one(scripts, loaded, place(hold, order, await server_ms(redis) + 60_000))
    await one(scripts, loaded, NotePayment(hold, order, "failed"))
    assert (await view(scripts, loaded, hold)).order.payment_status == "failed"  # type: ignore[union-attr]
    first = await one(scripts, loaded, EndOrder(hold, order, "cancelled", "payment_canceled"))
    assert first["ok"] and not first["replayed"]
    assert "A-1-3" not in (await scripts.snapshot(loaded)).seats  # free again
    seen = await view(scripts, loaded, hold)
    assert seen.status == "released" and seen.order is not None
    assert seen.order.ended is not None and seen.order.ended[:2] == (
        "cancelled",
        "payment_canceled",
    )
    again = await one(scripts, loaded, EndOrder(hold, order, "cancelled", "payment_canceled"))
    assert again["replayed"]
    kinds = [e["type"] for e in await outbox(redis, loaded)]
    assert kinds.count("order_ended") == 1 and kinds.count("payment_updated") == 1


@lua
async def test_a_cancelled_event_takes_no_new_orders(
    scripts: InventoryScripts, redis: Redis, loaded: str
) -> None:
    hold = uuid.uuid4().hex
    await one(scripts, loaded, HoldSeats(hold, "c1", ("A-2-1",), 300))
    await scripts.set_status(loaded, "cancelled")  # type: ignore[arg-type]
    refused = await one(scripts, loaded, place(hold, "or_" + hold, await server_ms(redis) + 60_000))
    assert (refused["code"], refused["status"]) == ("event_not_on_sale", "cancelled")


# ---------------------------------------------------------------- the writer


@pytest.fixture
async def written_event(db: AsyncEngine, scripts: InventoryScripts) -> str:
    draft = EventDraft("Writer order", "Hall", datetime.now(UTC), "EUR")
    stalls = SectionSpec("A", "Stalls", 4500, SectionKind.SEATED, rows=1, seats_per_row=10)
    event = await catalog.create_event(db, None, draft, [stalls])
    await catalog.put_on_sale(db, scripts, event.id)
    return event.id


async def rows(database_url: str, order_id: str) -> tuple[object, ...]:
    conn = await asyncpg.connect(database_url)
    try:
        order = await conn.fetchrow(
            "SELECT status, status_reason, items, amount_cents, expires_at IS NOT NULL AS expires"
            " FROM orders WHERE id = $1",
            order_id,
        )
        payment = await conn.fetchval("SELECT status FROM payments WHERE order_id = $1", order_id)
        tickets = await conn.fetch(
            "SELECT id, serial FROM tickets WHERE order_id = $1 ORDER BY seat_id", order_id
        )
    finally:
        await conn.close()
    assert order is not None
    return (
        order["status"], order["status_reason"], json.loads(order["items"] or "null"),
        order["amount_cents"], order["expires"], payment, [(t["id"], t["serial"]) for t in tickets],
    )  # fmt: skip


@pytest.mark.parametrize("ending", ["paid", "cancelled"])
async def test_an_orders_entries_land_on_the_same_rows_in_any_order(
    db: AsyncEngine, database_url: str, written_event: str, ending: str
) -> None:
    finals = []
    for n, arrival in enumerate(itertools.permutations(("placed", "last"))):
        token = uuid.uuid4().hex
        order_id, hold_id = f"or_{token}.{written_event}", f"hl_{token}.{written_event}"
        seat = f"A-1-{n + 1}"
        items = [{"seat": seat, "section": "A", "quantity": 1, "price_cents": 4500}]
        entries = {
            "placed": OrderPlaced(written_event, order_id, hold_id, "c1", 4500, "EUR", items,
                                  f"pi_{uuid.uuid4().hex}", "stripe", 1_700_000_000_000,
                                  1_700_000_900_000),
            "last": OrderConfirmed(written_event, order_id, hold_id, "c1", (seat,), None, 1,
                                   1_700_000_100_000, {"amount_cents": 4500, "currency": "EUR"})
            if ending == "paid"
            else OrderEnded(written_event, order_id, hold_id, "c1", "cancelled",
                            "payment_canceled", 1_700_000_100_000, ""),
        }  # fmt: skip
        for kind in arrival:  # each in a batch (a transaction) of its own
            async with db.begin() as conn:
                await write_entries(conn, [Entry("s", f"{n}-0", {}, entries[kind])])
        status, reason, stored, amount, expires, payment, tickets = await rows(
            database_url, order_id
        )
        assert (stored, amount, expires) == (items, 4500, True), arrival
        expected_tickets = [(i, s) for i, s, _, _ in issued(order_id, [seat], None, 1)]
        if ending == "paid":
            assert (status, payment, tickets) == ("paid", "succeeded", expected_tickets), arrival
        else:
            assert (status, reason, payment, tickets) == (
                "cancelled",
                "payment_canceled",
                "canceled",
                [],
            ), arrival
        finals.append(status)
    assert len(set(finals)) == 1


async def test_the_outbox_stream_of_a_real_checkout_parses(
    scripts: InventoryScripts, redis: Redis, loaded: str
) -> None:
    hold, order = uuid.uuid4().hex, "or_" + uuid.uuid4().hex
    await one(scripts, loaded, HoldSeats(hold, "c1", ("A-3-1",), 300))
    await one(scripts, loaded, place(hold, order, await server_ms(redis) + 60_000))
    from engine.outbox import parse_entry

    [entry] = [
        parse_entry(fields)
        for _, fields in await redis.xrange(EventKeys(loaded).outbox)
        if fields[b"type"] == b"order_placed"
    ]
    assert isinstance(entry, OrderPlaced) and entry.items == list(ITEMS)
