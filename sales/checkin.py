"""The door: admitting a ticket once, and the event's tally.

Scanning is for the event's organizer and admins. The token's signature and
event are verified first; then one statement records the first scan if the
ticket is still valid and is the issue the token names
(:func:`persistence.tickets.check_in`), so fifty scans of one ticket at once
admit it once, and a refunded ticket is refused, as is one whose refund is
under way: a refund and a scan of one order never both go ahead
(:func:`persistence.orders.claim_refund`).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncEngine

from engine.client import EngineClient
from persistence import tickets as ticket_store
from sales.access import Principal, managed_event
from sales.errors import SaleRefused
from sales.holds import EventLookup
from sales.orders import engine_order, record_paid
from sales.ticketing import InvalidTicket, TicketSigner
from sales.vocabulary import OrderStatus


@dataclass(frozen=True)
class Admitted:
    ticket_id: uuid.UUID
    section: str
    seat: str | None
    checked_in_at: datetime


async def check_in(
    db: AsyncEngine,
    engine: EngineClient,
    events: EventLookup,
    signer: TicketSigner,
    event_id: str,
    token: str,
    user: Principal,
) -> Admitted:
    event = await managed_event(db, event_id, user)
    try:
        claims = signer.verify(token, event.id)
        ticket_id = uuid.UUID(claims.ticket_id)
    except (InvalidTicket, ValueError) as exc:
        raise SaleRefused("invalid_ticket", str(exc) or "not a ticket") from exc
    result = await ticket_store.check_in(db, ticket_id, event.id, claims.serial, user.user_id)
    if (
        not result.valid
        and not result.refunding
        and claims.order_id
        and await _record_if_sold(db, engine, events, claims.order_id, ticket_id)
    ):
        result = await ticket_store.check_in(db, ticket_id, event.id, claims.serial, user.user_id)
    if result.refunding:
        raise SaleRefused("ticket_refunding", "the ticket's order is being refunded")
    if not result.valid:
        raise SaleRefused("invalid_ticket", "the ticket was revoked or does not exist")
    assert result.at is not None
    if not result.first:
        raise SaleRefused(
            "already_checked_in",
            "this ticket was already checked in",
            ticket_id=str(ticket_id),
            checked_in_at=result.at.isoformat().replace("+00:00", "Z"),
        )
    return Admitted(ticket_id, result.section_code, result.seat_id, result.at)


async def _record_if_sold(
    db: AsyncEngine, engine: EngineClient, events: EventLookup, order_id: str, ticket_id: uuid.UUID
) -> bool:
    """A ticket of a sale the writer has not recorded yet: the engine says the
    order is paid and has the ticket, so the sale is written now and the scan
    goes ahead."""
    order = await engine_order(engine, events, order_id)
    if order is None or order.status is not OrderStatus.PAID:
        return False
    if all(t.id != ticket_id for t in order.tickets):
        return False
    await record_paid(db, order)
    return True


@dataclass(frozen=True)
class DoorTally:
    event_id: str
    sold: int  # valid tickets
    checked_in: int


async def tally(db: AsyncEngine, event_id: str, user: Principal) -> DoorTally:
    event = await managed_event(db, event_id, user)
    sold, checked_in = await ticket_store.checkin_stats(db, event.id)
    return DoorTally(event.id, sold, checked_in)
