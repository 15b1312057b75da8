"""The door: admitting a ticket once, and the event's tally.

Scanning is for the event's organizer and admins. The token's signature and
event are verified first; then one statement records the first scan if the
ticket is still valid and is the issue the token names
(:func:`persistence.tickets.check_in`), so fifty scans of one ticket at once
admit it once, and a refunded ticket is refused.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncEngine

from persistence import tickets as ticket_store
from sales.access import Principal, managed_event
from sales.errors import SaleRefused
from sales.ticketing import InvalidTicket, TicketSigner


@dataclass(frozen=True)
class Admitted:
    ticket_id: uuid.UUID
    section: str
    seat: str | None
    checked_in_at: datetime


async def check_in(
    db: AsyncEngine, signer: TicketSigner, event_id: str, token: str, user: Principal
) -> Admitted:
    event = await managed_event(db, event_id, user)
    try:
        claims = signer.verify(token, event.id)
        ticket_id = uuid.UUID(claims.ticket_id)
    except (InvalidTicket, ValueError) as exc:
        raise SaleRefused("invalid_ticket", str(exc) or "not a ticket") from exc
    result = await ticket_store.check_in(db, ticket_id, event.id, claims.serial, user.user_id)
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


@dataclass(frozen=True)
class DoorTally:
    event_id: str
    sold: int  # valid tickets
    checked_in: int


async def tally(db: AsyncEngine, event_id: str, user: Principal) -> DoorTally:
    event = await managed_event(db, event_id, user)
    sold, checked_in = await ticket_store.checkin_stats(db, event.id)
    return DoorTally(event.id, sold, checked_in)
