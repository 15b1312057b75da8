"""Payments, webhook bookkeeping and the order states the API sets itself
(an order ends ``cancelled``, or ``refunded`` before it was ever paid, without
an engine sale to write behind)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncEngine

from persistence.models import Order, Payment, ProcessedWebhookEvent
from sales.vocabulary import OrderStatus, PaymentStatus


@dataclass(frozen=True)
class PaymentRecord:
    order_id: str
    payment_intent_id: str
    status: PaymentStatus


async def record_payment(
    db: AsyncEngine,
    *,
    order_id: str,
    provider: str,
    payment_intent_id: str,
    amount_cents: int,
    currency: str,
    status: PaymentStatus = PaymentStatus.PENDING,
) -> None:
    async with db.begin() as conn:
        await conn.execute(
            insert(Payment)
            .values(
                id=uuid.uuid4(),
                order_id=order_id,
                provider=provider,
                payment_intent_id=payment_intent_id,
                status=status,
                amount_cents=amount_cents,
                currency=currency,
            )
            .on_conflict_do_nothing(index_elements=[Payment.payment_intent_id])
        )


async def payment_of(db: AsyncEngine, order_id: str) -> PaymentRecord | None:
    async with db.connect() as conn:
        row = (
            await conn.execute(
                select(Payment.order_id, Payment.payment_intent_id, Payment.status)
                .where(Payment.order_id == order_id)
                .order_by(Payment.created_at.desc())
                .limit(1)
            )
        ).one_or_none()
    return (
        PaymentRecord(row.order_id, row.payment_intent_id, PaymentStatus(row.status))
        if row
        else None
    )


async def order_of_intent(db: AsyncEngine, payment_intent_id: str) -> str | None:
    """The order a PaymentIntent pays for (charge events name only the intent)."""
    async with db.connect() as conn:
        return (
            await conn.execute(
                select(Payment.order_id).where(Payment.payment_intent_id == payment_intent_id)
            )
        ).scalar_one_or_none()


async def set_payment_status(
    db: AsyncEngine, payment_intent_id: str, status: PaymentStatus
) -> None:
    async with db.begin() as conn:
        await conn.execute(
            update(Payment)
            .where(Payment.payment_intent_id == payment_intent_id)
            .values(status=status, updated_at=datetime.now(UTC))
        )


async def end_unpaid_order(
    db: AsyncEngine, order_id: str, status: OrderStatus, reason: str
) -> bool:
    """``cancelled`` or ``refunded`` (money returned for seats it never got),
    only from ``pending_payment``: a paid order is never overwritten here."""
    async with db.begin() as conn:
        changed = (
            await conn.execute(
                update(Order)
                .where(Order.id == order_id, Order.status == OrderStatus.PENDING_PAYMENT)
                .values(
                    status=status,
                    status_reason=reason,
                    refunded_at=datetime.now(UTC) if status == OrderStatus.REFUNDED else None,
                )
                .returning(Order.id)
            )
        ).first()
    return changed is not None


async def webhook_seen(db: AsyncEngine, event_id: str) -> bool:
    async with db.connect() as conn:
        return (
            await conn.execute(
                select(ProcessedWebhookEvent.id).where(ProcessedWebhookEvent.id == event_id)
            )
        ).first() is not None


async def mark_webhook_handled(db: AsyncEngine, event_id: str, provider: str) -> None:
    async with db.begin() as conn:
        await conn.execute(
            insert(ProcessedWebhookEvent)
            .values(id=event_id, provider=provider)
            .on_conflict_do_nothing()
        )
