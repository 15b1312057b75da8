"""Tickets and the door: a paid order's signed tickets and their QR codes, the
event's public key for offline scanners, check-in and its tally."""

from __future__ import annotations

import io
import uuid
from typing import Literal

import segno
from fastapi import APIRouter, Response

from api.deps import AuditDep, CurrentUser, DbDep, EngineDep, EventsDep, SignerDep
from api.schemas import (
    CheckInIn,
    CheckInOut,
    CheckInStatsOut,
    TicketKeyOut,
    TicketList,
    TicketTokenOut,
    problem_responses,
)
from sales import checkin, tickets
from sales.access import visible_event

router = APIRouter(tags=["tickets"])

QR_MEDIA = {"svg": "image/svg+xml", "png": "image/png"}


@router.get("/orders/{order_id}/tickets", responses=problem_responses(401, 404))
async def order_tickets(
    order_id: str,
    user: CurrentUser,
    db: DbDep,
    engine: EngineDep,
    events: EventsDep,
    signer: SignerDep,
) -> TicketList:
    """One ticket per seat or GA place once the order is paid, each with the
    signed token its QR code carries; a refunded order's tickets are revoked."""
    order, issued = await tickets.tickets_of_order(db, engine, events, signer, order_id, user)
    return TicketList(
        order_id=order.id,
        order_status=order.status,
        items=[
            TicketTokenOut(
                id=i.ticket.id,
                event_id=i.ticket.event_id,
                seat=i.ticket.seat_id,
                section=i.ticket.section_code,
                status=i.ticket.status,
                token=i.token,
            )
            for i in issued
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
    db: DbDep,
    signer: SignerDep,
) -> Response:
    """The ticket's token as a QR code (segno), for a phone screen or print."""
    token = await tickets.ticket_token(db, signer, ticket_id, user)
    out = io.BytesIO()
    segno.make(token, error="m").save(out, kind=fmt, scale=4 if fmt == "png" else 1, border=4)
    return Response(
        out.getvalue(),
        media_type=QR_MEDIA[fmt],
        headers={"Cache-Control": "private, no-store"},
    )


@router.get("/events/{event_id}/ticket-key", responses=problem_responses(404))
async def ticket_key(event_id: str, db: DbDep, signer: SignerDep) -> TicketKeyOut:
    """The public key this event's tickets verify with, for offline scanners."""
    event = await visible_event(db, event_id, None)
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
    event_id: str,
    body: CheckInIn,
    user: CurrentUser,
    db: DbDep,
    engine: EngineDep,
    events: EventsDep,
    signer: SignerDep,
    audit: AuditDep,
) -> CheckInOut:
    """Admits a ticket once: its signature and event are verified, a revoked
    ticket is refused, and a second scan answers 409 with the first's time."""
    admitted = await checkin.check_in(db, engine, events, signer, event_id, body.token, user)
    await audit("ticket.checked_in", str(admitted.ticket_id), event_id=event_id)
    return CheckInOut(
        ticket_id=admitted.ticket_id,
        section=admitted.section,
        seat=admitted.seat,
        checked_in_at=admitted.checked_in_at,
    )


@router.get("/events/{event_id}/checkins/stats", responses=problem_responses(401, 403, 404))
async def checkin_stats(event_id: str, user: CurrentUser, db: DbDep) -> CheckInStatsOut:
    """Checked in against sold (valid tickets), for the event's owner and admins."""
    tally = await checkin.tally(db, event_id, user)
    return CheckInStatsOut(event_id=tally.event_id, sold=tally.sold, checked_in=tally.checked_in)
