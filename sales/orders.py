"""Reading orders: a buyer's own, or one order to whoever may see it."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy.ext.asyncio import AsyncEngine

from persistence import orders as order_store
from persistence import payments as payment_store
from persistence.orders import OrderRecord
from persistence.payments import PaymentRecord
from sales.access import Principal, may_see_sale
from sales.errors import SaleRefused
from sales.vocabulary import OrderStatus


def status_shown(order: OrderRecord, now: datetime | None = None) -> OrderStatus:
    """What the buyer sees: a pending order whose hold has lapsed is
    ``expired`` (its seats are back on sale), whatever Postgres still says."""
    now = now or datetime.now(UTC)
    if (
        order.status is OrderStatus.PENDING_PAYMENT
        and order.expires_at is not None
        and order.expires_at <= now
    ):
        return OrderStatus.EXPIRED
    return order.status


def may_see(order: OrderRecord, user: Principal) -> bool:
    return may_see_sale(order.customer_id, order.event_organizer_id, user)


async def order_for(db: AsyncEngine, order_id: str, user: Principal) -> OrderRecord:
    """The order with its tickets, to its buyer, the event's organizer and admins."""
    order = await order_store.get_order(db, order_id)
    if order is None or not may_see(order, user):
        raise SaleRefused("not_found", "no such order")
    return order


async def order_with_payment(
    db: AsyncEngine, order_id: str, user: Principal
) -> tuple[OrderRecord, PaymentRecord | None]:
    order = await order_for(db, order_id, user)
    return order, await payment_store.payment_of(db, order.id)


async def my_orders(db: AsyncEngine, user: Principal) -> list[OrderRecord]:
    """The caller's orders, newest first."""
    return await order_store.list_orders(db, user.customer_id)
