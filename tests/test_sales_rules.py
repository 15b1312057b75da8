"""The sale's rules that need no server: who may see or manage what, what an
order shows, how a hold is priced, and the shapes one layer hands another
(order items as Postgres stores them, outbox entries as lib.lua writes them)."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta

import pytest

from engine.outbox import OrderConfirmed, OrderRefunded, parse_entry
from persistence.events import EventRecord, SectionRecord
from persistence.orders import OrderRecord
from sales.access import Principal, may_manage, may_see_event, may_see_sale
from sales.errors import SaleRefused
from sales.holds import event_of_hold, new_hold_id, price
from sales.items import OrderItem, Places, items_from_json, items_to_json
from sales.orders import status_shown
from sales.vocabulary import EventStatus, OrderStatus, Role, SectionKind

ORGANIZER = Principal(uuid.uuid4(), Role.ORGANIZER)
RIVAL = Principal(uuid.uuid4(), Role.ORGANIZER)
ADMIN = Principal(uuid.uuid4(), Role.ADMIN)
BUYER = Principal(uuid.uuid4(), Role.CUSTOMER)
NOW = datetime(2027, 6, 1, 20, 0, tzinfo=UTC)


def event(status: EventStatus = EventStatus.ON_SALE) -> EventRecord:
    return EventRecord(
        id="ev_1",
        organizer_id=ORGANIZER.user_id,
        name="Night",
        venue="Hall",
        description=None,
        starts_at=NOW,
        currency="EUR",
        status=status,
        hold_ttl_s=600,
        max_tickets_per_customer=0,
        created_at=NOW,
        published_at=NOW,
        sections=(
            SectionRecord("A", "Stalls", SectionKind.SEATED, 4500, 12, 3, 4),
            SectionRecord("FLOOR", "Floor", SectionKind.GENERAL, 3000, 20, None, None),
        ),
    )


def order(status: OrderStatus, expires_at: datetime | None) -> OrderRecord:
    return OrderRecord(
        id="or_1",
        event_id="ev_1",
        event_organizer_id=ORGANIZER.user_id,
        customer_id=BUYER.customer_id,
        hold_id="hl_x.ev_1",
        status=status,
        amount_cents=4500,
        currency="EUR",
        items=(OrderItem("A", 1, 4500, seat="A-1-1"),),
        created_at=NOW,
        expires_at=expires_at,
        confirmed_at=None,
        refunded_at=None,
    )


def test_an_event_is_managed_by_its_organizer_and_admins_only() -> None:
    on_sale = event()
    assert may_manage(on_sale, ORGANIZER) and may_manage(on_sale, ADMIN)
    assert not may_manage(on_sale, RIVAL) and not may_manage(on_sale, BUYER)
    assert not may_manage(on_sale, None)


def test_a_draft_is_seen_only_by_those_who_manage_it() -> None:
    draft = event(EventStatus.DRAFT)
    assert may_see_event(draft, ORGANIZER) and may_see_event(draft, ADMIN)
    assert not any(may_see_event(draft, who) for who in (RIVAL, BUYER, None))
    assert all(may_see_event(event(), who) for who in (RIVAL, BUYER, None))


def test_a_sale_is_seen_by_its_buyer_the_events_organizer_and_admins_only() -> None:
    seen_by = [
        who
        for who in (BUYER, ORGANIZER, ADMIN, RIVAL, Principal(uuid.uuid4(), Role.CUSTOMER))
        if may_see_sale(BUYER.customer_id, ORGANIZER.user_id, who)
    ]
    assert seen_by == [BUYER, ORGANIZER, ADMIN]


def test_a_pending_order_whose_hold_lapsed_shows_expired_and_nothing_else_changes() -> None:
    later = NOW + timedelta(minutes=15)
    assert (
        status_shown(order(OrderStatus.PENDING_PAYMENT, later), NOW) is OrderStatus.PENDING_PAYMENT
    )
    assert status_shown(order(OrderStatus.PENDING_PAYMENT, NOW), later) is OrderStatus.EXPIRED
    assert status_shown(order(OrderStatus.PAID, NOW), later) is OrderStatus.PAID
    assert (
        status_shown(order(OrderStatus.PENDING_PAYMENT, None), later) is OrderStatus.PENDING_PAYMENT
    )


def test_a_hold_is_priced_per_seat_or_per_place_from_its_sections() -> None:
    amount, items = price(event(), ["A-1-1", "A-3-4"], None, 2)
    assert amount == 9000
    assert items == (OrderItem("A", 1, 4500, "A-1-1"), OrderItem("A", 1, 4500, "A-3-4"))
    amount, items = price(event(), None, "FLOOR", 3)
    assert (amount, items) == (9000, (OrderItem("FLOOR", 3, 3000),))


@pytest.mark.parametrize(
    ("seats", "section", "code"),
    [
        (["B-1-1"], None, "unknown_seat"),
        (["FLOOR-1-1"], None, "unknown_seat"),  # a GA section has no seats
        (None, "NOPE", "unknown_section"),
        (None, "A", "wrong_section_kind"),  # a seated section is held by seat
    ],
)
def test_a_hold_of_what_the_event_does_not_have_is_refused(
    seats: list[str] | None, section: str | None, code: str
) -> None:
    with pytest.raises(SaleRefused) as refused:
        price(event(), seats, section, 1)
    assert refused.value.code == code


def test_hold_ids_name_their_event_and_an_idempotency_key_fixes_the_id() -> None:
    keyed = new_hold_id("ev_1", BUYER, "k1")
    assert keyed == new_hold_id("ev_1", BUYER, "k1") != new_hold_id("ev_1", BUYER, "k2")
    assert keyed != new_hold_id("ev_1", Principal(uuid.uuid4(), Role.CUSTOMER), "k1")
    assert new_hold_id("ev_1", BUYER, None) != new_hold_id("ev_1", BUYER, None)
    assert event_of_hold(keyed) == "ev_1"
    for bad in ("nope", "hl_abc", "xx_abc.ev_1"):
        with pytest.raises(SaleRefused):
            event_of_hold(bad)


def test_order_items_keep_the_json_postgres_has_always_stored() -> None:
    stored = [
        {"seat": "A-1-1", "section": "A", "quantity": 1, "price_cents": 4500},
        {"section": "FLOOR", "quantity": 2, "price_cents": 3000},
    ]
    items = items_from_json(stored)
    assert items_to_json(items) == stored
    assert Places.of(items[:1]) == Places(("A-1-1",), None, 1)
    assert Places.of(items[1:]) == Places(None, "FLOOR", 2)


def test_outbox_entries_are_read_as_lib_lua_writes_them() -> None:
    confirmed = {
        b"type": b"order_confirmed", b"event_id": b"ev_1", b"order_id": b"or_1",
        b"hold_id": b"hl_1", b"customer_id": b"c1", b"seats": b"A-1-1,A-1-2",
        b"section": b"", b"quantity": b"2", b"confirmed_at_ms": b"1700000000000",
        b"meta": json.dumps({"amount_cents": 9000, "currency": "EUR"}).encode(),
        b"late": b"1",
    }  # fmt: skip
    entry = parse_entry(confirmed)
    assert isinstance(entry, OrderConfirmed)
    assert (entry.seats, entry.section, entry.quantity) == (("A-1-1", "A-1-2"), None, 2)
    assert (entry.amount_cents, entry.currency, entry.late) == (9000, "EUR", True)
    refunded = parse_entry({"type": "order_refunded", "event_id": "ev_1", "order_id": "or_1",
                            "hold_id": "", "seats": "", "section": "FLOOR", "quantity": "3",
                            "refunded_at_ms": "5"})  # fmt: skip
    assert refunded == OrderRefunded("ev_1", "or_1", "", (), "FLOOR", 3, 5)
    assert parse_entry({"type": "something_newer", "order_id": "or_1"}) is None
