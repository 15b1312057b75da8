"""Tickets as the door sees them: who may see one, and the first scan.

A check-in is one row per ticket (``checkins.ticket_id`` is unique); the
insert that records it also checks, in the same statement, that the ticket is
still valid and is the issue the token names, so a refund racing a scan
cannot let a revoked ticket in, and fifty scans of one ticket admit it once.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncEngine

from engine.model import section_of
from persistence.models import CheckIn, Event, Order, Ticket
from sales.vocabulary import TicketStatus


@dataclass(frozen=True)
class TicketView:
    id: uuid.UUID
    order_id: str
    event_id: str
    section_code: str
    seat_id: str | None
    status: TicketStatus
    serial: str
    customer_id: str
    event_organizer_id: uuid.UUID | None


@dataclass(frozen=True)
class CheckInResult:
    """``first`` is True for the scan that admitted the ticket; ``at`` is when
    that first scan was. ``valid`` False: no such valid issue of the ticket."""

    valid: bool
    first: bool = False
    at: datetime | None = None
    section_code: str = ""
    seat_id: str | None = None
    refunding: bool = False  # the order's refund is claimed: not admitted


# Ticket ids and serials are derived from their order, so the tickets of a
# sale exist, with the same ids and the same signed tokens, before the writer
# has recorded them (the buyer reads them at once; the door admits them).
TICKET_NAMESPACE = uuid.UUID("6f6e7361-6c65-4b1c-9e1d-7469636b6574")


def issued(
    order_id: str, seats: Sequence[str] | None, section: str | None, quantity: int
) -> list[tuple[uuid.UUID, str, str, str | None]]:
    """The tickets of a sale as (id, serial, section, seat): one per seat, in
    the order sold, or ``quantity`` places of a general section."""
    places: list[tuple[str, str | None]] = (
        [(section_of(seat), seat) for seat in seats]
        if seats
        else [(section or "", None)] * quantity
    )
    return [
        (
            uuid.uuid5(TICKET_NAMESPACE, f"{order_id}/{n}"),
            hashlib.sha256(f"onsale-ticket/{order_id}/{n}".encode()).hexdigest()[:16],
            code,
            seat,
        )
        for n, (code, seat) in enumerate(places)
    ]


_COLUMNS = (
    Ticket.id,
    Ticket.order_id,
    Ticket.event_id,
    Ticket.section_code,
    Ticket.seat_id,
    Ticket.status,
    Ticket.serial,
    Order.customer_id,
    Event.organizer_id,
)


def _view(row: Any) -> TicketView:
    return TicketView(
        row.id,
        row.order_id,
        row.event_id,
        row.section_code,
        row.seat_id,
        TicketStatus(row.status),
        row.serial,
        row.customer_id,
        row.organizer_id,
    )


async def get_ticket(db: AsyncEngine, ticket_id: uuid.UUID) -> TicketView | None:
    query = (
        select(*_COLUMNS)
        .join(Order, Order.id == Ticket.order_id)
        .join(Event, Event.id == Order.event_id)
        .where(Ticket.id == ticket_id)
    )
    async with db.connect() as conn:
        row = (await conn.execute(query)).one_or_none()
    return None if row is None else _view(row)


_REFUND_CLAIMED = text(
    """
    SELECT o.refund_claimed_at IS NOT NULL AND t.status = 'valid'
    FROM tickets t JOIN orders o ON o.id = t.order_id
    WHERE t.id = :ticket_id FOR SHARE OF o
    """
)

_CHECK_IN = text(
    f"""
    WITH ticket AS (
        SELECT id, section_code, seat_id FROM tickets
        WHERE id = :ticket_id AND event_id = :event_id AND serial = :serial
          AND status = '{TicketStatus.VALID}'
    ), admitted AS (
        INSERT INTO checkins (id, ticket_id, event_id, scanned_by)
        SELECT gen_random_uuid(), id, :event_id, :scanned_by FROM ticket
        ON CONFLICT (ticket_id) DO NOTHING
        RETURNING checked_in_at
    )
    SELECT (SELECT checked_in_at FROM admitted), ticket.section_code, ticket.seat_id
    FROM ticket
    """
)


async def check_in(
    db: AsyncEngine, ticket_id: uuid.UUID, event_id: str, serial: str, scanned_by: uuid.UUID
) -> CheckInResult:
    async with db.begin() as conn:
        # The order's row, shared with other scans and exclusive of a refund
        # claim (persistence.orders.claim_refund): a refund and a scan of the
        # same order never both go ahead.
        refunding = (await conn.execute(_REFUND_CLAIMED, {"ticket_id": ticket_id})).scalar()
        if refunding:
            return CheckInResult(valid=False, refunding=True)
        row = (
            await conn.execute(
                _CHECK_IN,
                {
                    "ticket_id": ticket_id,
                    "event_id": event_id,
                    "serial": serial,
                    "scanned_by": scanned_by,
                },
            )
        ).one_or_none()
    if row is None:
        return CheckInResult(valid=False)
    admitted_at, section_code, seat_id = row
    if admitted_at is not None:
        return CheckInResult(True, True, admitted_at, section_code, seat_id)
    # Scanned before (or by a scan that committed while this one waited on
    # it): a fresh statement sees the first scan's row.
    async with db.connect() as conn:
        first_at = (
            await conn.execute(select(CheckIn.checked_in_at).where(CheckIn.ticket_id == ticket_id))
        ).scalar_one()
    return CheckInResult(True, False, first_at, section_code, seat_id)


async def checkin_stats(db: AsyncEngine, event_id: str) -> tuple[int, int]:
    """(valid tickets sold, of them checked in)."""
    valid = Ticket.status == TicketStatus.VALID
    sold = select(func.count()).where(Ticket.event_id == event_id, valid)
    checked = (
        select(func.count())
        .select_from(CheckIn)
        .join(Ticket, Ticket.id == CheckIn.ticket_id)
        .where(CheckIn.event_id == event_id, valid)
    )
    async with db.connect() as conn:
        return int((await conn.execute(sold)).scalar_one()), int(
            (await conn.execute(checked)).scalar_one()
        )
