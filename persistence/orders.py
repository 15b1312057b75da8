"""Orders as the API creates and reads them.

The API writes an order ``pending_payment`` when a buyer checks out a hold;
the outbox writer turns it ``paid`` once the engine has confirmed the sale
(and adds its tickets) — never the other way round, so a sale the engine
confirmed is recorded even if this row came late or never.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import Enum
from typing import Any

from sqlalchemy import exists, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from persistence.models import CheckIn, Event, Order, Ticket
from sales.items import OrderItem, items_from_json, items_to_json
from sales.vocabulary import OrderStatus, TicketStatus


@dataclass(frozen=True)
class TicketRecord:
    id: uuid.UUID
    event_id: str
    section_code: str
    seat_id: str | None
    status: TicketStatus
    serial: str  # signed into the ticket's token (sales/ticketing.py)


@dataclass(frozen=True)
class OrderRecord:
    id: str
    event_id: str
    event_organizer_id: uuid.UUID | None
    customer_id: str
    hold_id: str
    status: OrderStatus
    amount_cents: int | None
    currency: str | None
    items: tuple[OrderItem, ...]
    created_at: datetime
    expires_at: datetime | None
    confirmed_at: datetime | None
    refunded_at: datetime | None
    status_reason: str | None = None
    tickets: tuple[TicketRecord, ...] = ()


class OrderExists(Exception):
    def __init__(self, order_id: str) -> None:
        super().__init__(order_id)
        self.order_id = order_id


def order_id_for(hold_id: str) -> str:
    """One order per hold, with an id known before anything is written: a
    retried checkout (and its PaymentIntent) lands on the same order."""
    return "or_" + hashlib.sha256(hold_id.encode()).hexdigest()[:20]


async def create_order(
    db: AsyncEngine,
    *,
    order_id: str,
    event_id: str,
    customer_id: str,
    hold_id: str,
    amount_cents: int,
    currency: str,
    items: Sequence[OrderItem],
    expires_at: datetime,
) -> OrderRecord:
    try:
        async with db.begin() as conn:
            await conn.execute(
                insert(Order).values(
                    id=order_id,
                    event_id=event_id,
                    customer_id=customer_id,
                    hold_id=hold_id,
                    status=OrderStatus.PENDING_PAYMENT,
                    amount_cents=amount_cents,
                    currency=currency,
                    items=items_to_json(items),
                    expires_at=expires_at,
                )
            )
    except IntegrityError as exc:  # orders_one_per_hold
        async with db.connect() as conn:
            existing = (
                await conn.execute(select(Order.id).where(Order.hold_id == hold_id))
            ).scalar_one_or_none()
        if existing is None:
            raise
        raise OrderExists(existing) from exc
    order = await get_order(db, order_id)
    assert order is not None
    return order


_ORDER_COLUMNS = [c for c in Order.__table__.c]


def _order(row: Any, tickets: tuple[TicketRecord, ...] = ()) -> OrderRecord:
    return OrderRecord(
        id=row.id,
        event_id=row.event_id,
        event_organizer_id=row.organizer_id,
        customer_id=row.customer_id,
        hold_id=row.hold_id,
        status=OrderStatus(row.status),
        amount_cents=row.amount_cents,
        currency=row.currency,
        items=items_from_json(row.items),
        created_at=row.created_at,
        expires_at=row.expires_at,
        confirmed_at=row.confirmed_at,
        refunded_at=row.refunded_at,
        status_reason=row.status_reason,
        tickets=tickets,
    )


def _orders_query() -> Any:
    return select(*_ORDER_COLUMNS, Event.organizer_id).join(Event, Event.id == Order.event_id)


async def get_order(db: AsyncEngine, order_id: str) -> OrderRecord | None:
    async with db.connect() as conn:
        row = (await conn.execute(_orders_query().where(Order.id == order_id))).one_or_none()
        if row is None:
            return None
        tickets = (
            await conn.execute(
                select(Ticket)
                .where(Ticket.order_id == order_id)
                .order_by(Ticket.section_code, Ticket.seat_id, Ticket.id)
            )
        ).all()
    return _order(
        row,
        tuple(
            TicketRecord(
                t.id, t.event_id, t.section_code, t.seat_id, TicketStatus(t.status), t.serial
            )
            for t in tickets
        ),
    )


async def list_orders(db: AsyncEngine, customer_id: str, limit: int = 100) -> list[OrderRecord]:
    async with db.connect() as conn:
        rows = (
            await conn.execute(
                _orders_query()
                .where(Order.customer_id == customer_id)
                .order_by(Order.created_at.desc(), Order.id)
                .limit(limit)
            )
        ).all()
    return [_order(r) for r in rows]


class RefundClaim(Enum):
    CLAIMED = "claimed"  # this caller asks Stripe
    IN_PROGRESS = "in_progress"  # another request is asking Stripe now
    CHECKED_IN = "checked_in"  # a ticket of the order was admitted at the door
    UNKNOWN = "unknown"  # no such order in Postgres


async def claim_refund(db: AsyncEngine, order_id: str, stale_after_s: float) -> RefundClaim:
    """Claims the order's refund before Stripe is asked, unless a ticket of it
    was admitted or another claim is under way; the door refuses the order's
    tickets once it is claimed (:func:`persistence.tickets.check_in`).

    The order's row is locked first, and each check is a statement of its own,
    so it sees every check-in committed before the lock was granted (a scan
    holds the same row while it admits). A claim older than
    ``stale_after_s`` (its request died before Stripe answered) may be taken
    again: Stripe's idempotency key makes the second ask the same refund."""
    async with db.begin() as conn:
        claimed_at = (
            await conn.execute(
                select(Order.refund_claimed_at).where(Order.id == order_id).with_for_update()
            )
        ).one_or_none()
        if claimed_at is None:
            return RefundClaim.UNKNOWN
        now = datetime.now(UTC)
        if claimed_at[0] is not None and claimed_at[0] > now - timedelta(seconds=stale_after_s):
            return RefundClaim.IN_PROGRESS
        admitted = (
            await conn.execute(
                select(
                    exists()
                    .where(CheckIn.ticket_id == Ticket.id)
                    .where(Ticket.order_id == order_id)
                )
            )
        ).scalar_one()
        if admitted:
            return RefundClaim.CHECKED_IN
        await conn.execute(update(Order).where(Order.id == order_id).values(refund_claimed_at=now))
    return RefundClaim.CLAIMED


async def release_refund_claim(db: AsyncEngine, order_id: str) -> None:
    """Stripe refused or could not be reached: nothing was refunded, the
    tickets work again and the refund may be asked again."""
    async with db.begin() as conn:
        await conn.execute(update(Order).where(Order.id == order_id).values(refund_claimed_at=None))
