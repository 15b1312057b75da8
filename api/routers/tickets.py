"""Tickets and the door: a paid order's signed tickets and their QR codes, the
event's public key for offline scanners, check-in and its tally."""

from __future__ import annotations

import io
import uuid
from typing import Literal

import segno
from fastapi import APIRouter, Request, Response

from api.deps import CurrentUser, DbDep
from api.errors import ApiError
from api.routers.events import managed_event, visible_event
from api.routers.orders import may_see as may_see_order
from api.routers.orders import may_see_sale
from api.schemas import (
    CheckInIn,
    CheckInOut,
    CheckInStatsOut,
    TicketKeyOut,
    TicketList,
    TicketTokenOut,
    problem_responses,
)
from api.ticketing import InvalidTicket, TicketClaims, TicketSigner
from persistence import orders as order_store
from persistence import tickets as store
from persistence.orders import TicketRecord
from persistence.tickets import TicketView

router = APIRouter(tags=["tickets"])

QR_MEDIA = {"svg": "image/svg+xml", "png": "image/png"}


def token_of(signer: TicketSigner, ticket: TicketRecord | TicketView) -> str:
    return signer.sign(
        TicketClaims(
            str(ticket.id), ticket.event_id, ticket.section_code, ticket.seat_id, ticket.serial
        )
    )


@router.get("/orders/{order_id}/tickets", responses=problem_responses(401, 404))
async def order_tickets(
    order_id: str, user: CurrentUser, request: Request, db: DbDep
) -> TicketList:
    """One ticket per seat or GA place once the order is paid, each with the
    signed token its QR code carries; a refunded order's tickets are revoked."""
    order = await order_store.get_order(db, order_id)
    if order is None or not may_see_order(order, user):
        raise ApiError("not_found", "no such order")
    signer: TicketSigner = request.app.state.tickets
    return TicketList(
        order_id=order.id,
        order_status=order.status,
        items=[
            TicketTokenOut(
                id=t.id,
                event_id=t.event_id,
                seat=t.seat_id,
                section=t.section_code,
                status=t.status,
                token=token_of(signer, t) if t.status == "valid" else None,
            )
            for t in order.tickets
        ],
    )


@router.get(
    "/tickets/{ticket_id}/qr.{fmt}",
    responses={
        200: {"content": {"image/svg+xml": {}, "image/png": {}}},
        **problem_responses(401, 404, 410),
    },
    response_class=Response,
)
async def ticket_qr(
    ticket_id: uuid.UUID,
    fmt: Literal["svg", "png"],
    user: CurrentUser,
    request: Request,
    db: DbDep,
) -> Response:
    """The ticket's token as a QR code (segno), for a phone screen or print."""
    ticket = await store.get_ticket(db, ticket_id)
    if ticket is None or not may_see_sale(ticket.customer_id, ticket.event_organizer_id, user):
        raise ApiError("not_found", "no such ticket")
    if ticket.status != "valid":
        raise ApiError("ticket_revoked", "this ticket's order was refunded")
    qr = segno.make(token_of(request.app.state.tickets, ticket), error="m")
    out = io.BytesIO()
    qr.save(out, kind=fmt, scale=4 if fmt == "png" else 1, border=4)
    return Response(
        out.getvalue(),
        media_type=QR_MEDIA[fmt],
        headers={"Cache-Control": "private, no-store"},
    )


@router.get("/events/{event_id}/ticket-key", responses=problem_responses(404))
async def ticket_key(event_id: str, request: Request) -> TicketKeyOut:
    """The public key this event's tickets verify with, for offline scanners."""
    event = await visible_event(request, event_id, None)
    signer: TicketSigner = request.app.state.tickets
    return TicketKeyOut(
        event_id=event.id,
        key_id=signer.key_id,
        jwk=signer.public_jwk(),
        public_key_pem=signer.public_pem(),
    )


@router.post(
    "/events/{event_id}/checkins", responses=problem_responses(400, 401, 403, 404, 409, 422)
)
async def check_in(
    event_id: str, body: CheckInIn, user: CurrentUser, request: Request, db: DbDep
) -> CheckInOut:
    """Admits a ticket once: its signature and event are verified, a revoked
    ticket is refused, and a second scan answers 409 with the first's time."""
    event = await managed_event(request, event_id, user)
    try:
        claims = request.app.state.tickets.verify(body.token, event.id)
        ticket_id = uuid.UUID(claims.ticket_id)
    except (InvalidTicket, ValueError) as exc:
        raise ApiError("invalid_ticket", str(exc) or "not a ticket") from exc
    result = await store.check_in(db, ticket_id, event.id, claims.serial, user.user_id)
    if not result.valid:
        raise ApiError("invalid_ticket", "the ticket was revoked or does not exist")
    if not result.first:
        raise ApiError(
            "already_checked_in",
            "this ticket was already checked in",
            ticket_id=str(ticket_id),
            checked_in_at=result.at.isoformat().replace("+00:00", "Z") if result.at else None,
        )
    assert result.at is not None
    return CheckInOut(
        ticket_id=ticket_id, section=result.section_code, seat=result.seat_id,
        checked_in_at=result.at,
    )  # fmt: skip


@router.get("/events/{event_id}/checkins/stats", responses=problem_responses(401, 403, 404))
async def checkin_stats(
    event_id: str, user: CurrentUser, request: Request, db: DbDep
) -> CheckInStatsOut:
    """Checked in against sold (valid tickets), for the event's owner and admins."""
    event = await managed_event(request, event_id, user)
    sold, checked_in = await store.checkin_stats(db, event.id)
    return CheckInStatsOut(event_id=event.id, sold=sold, checked_in=checked_in)
