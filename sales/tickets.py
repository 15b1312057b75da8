"""Tickets: a paid order's signed tickets, as their buyer (or the event's
organizer, or an admin) sees them. Each valid ticket carries the token its QR
code encodes; a refunded order's tickets are revoked and carry none."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncEngine

from engine.client import EngineClient
from persistence import tickets as ticket_store
from persistence.orders import OrderRecord, TicketRecord
from persistence.tickets import TicketView
from sales.access import Principal, may_see_sale
from sales.errors import SaleRefused
from sales.holds import EventLookup
from sales.orders import order_for
from sales.ticketing import TicketClaims, TicketSigner
from sales.vocabulary import TicketStatus


def token_of(signer: TicketSigner, ticket: TicketRecord | TicketView, order_id: str) -> str:
    return signer.sign(
        TicketClaims(
            str(ticket.id),
            ticket.event_id,
            ticket.section_code,
            ticket.seat_id,
            ticket.serial,
            order_id,
        )
    )


@dataclass(frozen=True)
class IssuedTicket:
    ticket: TicketRecord
    token: str | None  # None once revoked


async def tickets_of_order(
    db: AsyncEngine,
    engine: EngineClient,
    events: EventLookup,
    signer: TicketSigner,
    order_id: str,
    user: Principal,
) -> tuple[OrderRecord, list[IssuedTicket]]:
    """The order's tickets as soon as it is paid (the engine's word: the
    writer need not have recorded them)."""
    order = await order_for(db, engine, events, order_id, user)
    return order, [
        IssuedTicket(t, token_of(signer, t, order.id) if t.status is TicketStatus.VALID else None)
        for t in order.tickets
    ]


async def ticket_token(
    db: AsyncEngine, signer: TicketSigner, ticket_id: uuid.UUID, user: Principal
) -> str:
    """The token of a valid ticket the caller may see (for its QR code)."""
    ticket = await ticket_store.get_ticket(db, ticket_id)
    if ticket is None or not may_see_sale(ticket.customer_id, ticket.event_organizer_id, user):
        raise SaleRefused("not_found", "no such ticket")
    if ticket.status is not TicketStatus.VALID:
        raise SaleRefused("ticket_revoked", "this ticket's order was refunded")
    return token_of(signer, ticket, ticket.order_id)
