"""Holds: a buyer's seats or GA places, reserved for the event's hold TTL.

The engine decides whether a hold can be placed (atomically, per event); this
module prices it from the event's sections, names it, and finds a buyer's own
hold again. Hold ids name their event (``hl_<token>.<event id>``), so
``GET /holds/{id}`` needs no lookup.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Sequence
from typing import Protocol

from engine.client import EngineClient
from engine.model import HoldPlaced, HoldView, QueuePass, section_of
from persistence.events import EventRecord
from sales.access import Principal
from sales.errors import SaleRefused
from sales.items import OrderItem, amount_of
from sales.payments import Payments, PaymentsUnavailable
from sales.vocabulary import HoldStatus, OrderStatus, SectionKind


class EventLookup(Protocol):
    """Where the hold path reads events from (the API's per-process cache)."""

    async def get(self, event_id: str) -> EventRecord | None: ...


def new_hold_id(event_id: str, user: Principal, idempotency_key: str | None) -> str:
    """With an Idempotency-Key the id is derived from it, so even a retry that
    outlives the stored response cannot hold twice: the engine answers it as
    a replay."""
    if idempotency_key:
        token = hashlib.sha256(f"{user.user_id}\0{idempotency_key}".encode()).hexdigest()[:24]
    else:
        token = secrets.token_hex(12)
    return f"hl_{token}.{event_id}"


def event_of_hold(hold_id: str) -> str:
    prefix, _, event_id = hold_id.partition(".")
    if not prefix.startswith("hl_") or not event_id:
        raise SaleRefused("not_found", "no such hold")
    return event_id


def price(
    event: EventRecord, seats: Sequence[str] | None, section: str | None, quantity: int
) -> tuple[int, tuple[OrderItem, ...]]:
    """Amount and items of a hold, from the event's section prices; refuses
    seats and sections the event does not have."""
    items: list[OrderItem] = []
    if seats:
        for seat in seats:
            found = event.section(section_of(seat))
            if found is None or found.kind is not SectionKind.SEATED:
                raise SaleRefused(
                    "unknown_seat", f"no seat {seat} in this event", unavailable=[seat]
                )
            items.append(OrderItem(found.code, 1, found.price_cents, seat=seat))
    else:
        found = event.section(section or "")
        if found is None:
            raise SaleRefused("unknown_section", f"no section {section} in this event")
        if found.kind is not SectionKind.GENERAL:
            raise SaleRefused("wrong_section_kind", f"section {section} is held by seat")
        items.append(OrderItem(found.code, quantity, found.price_cents))
    return amount_of(items), tuple(items)


def amount(event: EventRecord, hold: HoldPlaced | HoldView) -> int:
    return price(event, hold.seats, hold.section, hold.quantity)[0]


async def place(
    engine: EngineClient,
    event: EventRecord,
    user: Principal,
    hold_id: str,
    *,
    seats: Sequence[str] | None = None,
    section: str | None = None,
    quantity: int = 0,
    fingerprint: str = "",
    queue_pass: QueuePass | None = None,
) -> HoldPlaced:
    """Holds ``seats``, or ``quantity`` places of a GA ``section``, for the
    event's hold TTL; the engine's errors (taken, sold out, over the limit)
    pass through. The event is on sale: the caller checked."""
    price(event, seats, section, quantity or len(seats or ()))
    if seats:
        return await engine.hold_seats(
            event.id,
            user.customer_id,
            seats,
            ttl_s=event.hold_ttl_s,
            hold_id=hold_id,
            fingerprint=fingerprint,
            queue_pass=queue_pass,
        )
    return await engine.hold_quantity(
        event.id,
        user.customer_id,
        section or "",
        quantity,
        ttl_s=event.hold_ttl_s,
        hold_id=hold_id,
        fingerprint=fingerprint,
        queue_pass=queue_pass,
    )


async def own_hold(
    events: EventLookup, engine: EngineClient, hold_id: str, user: Principal
) -> tuple[EventRecord, HoldView]:
    """The caller's hold and its event; someone else's hold does not exist for them."""
    event_id = event_of_hold(hold_id)
    event = await events.get(event_id)
    hold = await engine.hold(event_id, hold_id) if event else None
    if (
        event is None
        or hold is None
        or hold.customer_id != user.customer_id
        or hold.status is HoldStatus.REFUSED  # a remembered refusal is no hold
    ):
        raise SaleRefused("not_found", "no such hold")
    return event, hold


async def live_hold(
    events: EventLookup, engine: EngineClient, hold_id: str, user: Principal
) -> tuple[EventRecord, HoldView]:
    """The caller's hold, if it has not expired or been released."""
    event, hold = await own_hold(events, engine, hold_id, user)
    if hold.status in (HoldStatus.EXPIRED, HoldStatus.RELEASED):
        raise SaleRefused("hold_expired", f"the hold is {hold.status}")
    return event, hold


async def release(
    events: EventLookup,
    engine: EngineClient,
    hold_id: str,
    user: Principal,
    payments: Payments | None = None,
) -> None:
    """Gives the seats back at once (and again: releasing twice is fine).

    A hold with an order awaiting payment takes the order with it: its
    PaymentIntent is cancelled at Stripe first, so it can never be paid
    afterwards (a buyer who held, checked out and released again and again
    could otherwise pay every PaymentIntent and pass the per-customer
    limit). If the payment got there first, the release is refused: the
    order is being sold."""
    event, hold = await own_hold(events, engine, hold_id, user)
    if hold.status is HoldStatus.CONFIRMED:
        raise SaleRefused("already_confirmed", "the hold was bought; refund the order instead")
    placed = hold.order
    if placed is not None and placed.ended is None:
        if placed.payment_intent and payments is not None:
            try:
                intent = await payments.cancel(placed.payment_intent)
            except PaymentsUnavailable as exc:
                raise SaleRefused("payments_unavailable", str(exc)[:200]) from exc
            if intent.status == "succeeded":
                raise SaleRefused("already_confirmed", "the order was paid; refund it instead")
        # One engine call: ending the order lets its hold go (or refuses,
        # already_confirmed, if the sale got there first).
        await engine.end_order(
            event.id, hold_id, placed.order_id, OrderStatus.CANCELLED, "released"
        )
        return
    released = await engine.release(event.id, hold_id, user.customer_id)
    if released.status is HoldStatus.CONFIRMED:
        raise SaleRefused("already_confirmed", "the hold was bought; refund the order instead")
