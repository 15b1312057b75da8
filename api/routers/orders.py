"""Orders: checking out a hold, and reading what was bought."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Request, status

from api.deps import CurrentUser, Customer, DbDep, RedisDep
from api.errors import ApiError
from api.idempotency import idempotent
from api.routers.holds import IdempotencyKey, my_hold, price_of
from api.schemas import OrderIn, OrderItemOut, OrderList, OrderOut, TicketOut, problem_responses
from api.security import Principal
from persistence import events as events_store
from persistence import orders as store
from persistence.orders import OrderExists, OrderRecord

router = APIRouter(prefix="/orders", tags=["orders"])


def order_out(order: OrderRecord) -> OrderOut:
    shown = order.status
    if shown == "pending_payment" and order.expires_at and order.expires_at <= datetime.now(UTC):
        shown = "expired"  # its hold has lapsed: the seats are back on sale
    return OrderOut(
        order_id=order.id,
        event_id=order.event_id,
        hold_id=order.hold_id,
        status=shown,  # type: ignore[arg-type]
        amount_cents=order.amount_cents,
        currency=order.currency,
        created_at=order.created_at,
        expires_at=order.expires_at,
        confirmed_at=order.confirmed_at,
        items=[OrderItemOut(**item) for item in order.items],
        tickets=[
            TicketOut(
                id=t.id,
                event_id=t.event_id,
                seat=t.seat_id,
                section=t.section_code,
                status=t.status,
            )
            for t in order.tickets
        ],
    )


def may_see(order: OrderRecord, user: Principal) -> bool:
    return (
        user.role == "admin"
        or order.customer_id == user.customer_id
        or (order.event_organizer_id is not None and order.event_organizer_id == user.user_id)
    )


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=OrderOut,
    responses=problem_responses(401, 403, 404, 409, 410, 422),
)
async def create_order(
    body: OrderIn,
    user: Customer,
    request: Request,
    db: DbDep,
    redis: RedisDep,
    idempotency_key: IdempotencyKey = None,
) -> Any:
    """Checks out one of your active holds: an order awaiting payment until
    the hold ends. One order per hold."""

    async def handler() -> tuple[int, Any]:
        event, hold = await my_hold(request, body.hold_id, user)
        current = await events_store.get_event(db, event.id)  # not cached: cancel is final
        if current is None or current.status == "cancelled":
            raise ApiError("event_ended", "the event is cancelled")
        if hold.status == "confirmed" and hold.order_id:
            raise ApiError("order_exists", order_id=hold.order_id)
        if hold.status != "held":
            raise ApiError("hold_expired", f"the hold is {hold.status}")
        amount, items = price_of(event, hold.seats, hold.section, hold.quantity)
        try:
            order = await store.create_order(
                db,
                order_id=store.new_order_id(),
                event_id=event.id,
                customer_id=user.customer_id,
                hold_id=hold.hold_id,
                amount_cents=amount,
                currency=event.currency,
                items=items,
                expires_at=datetime.fromtimestamp(hold.expires_at_ms / 1000, UTC),
            )
        except OrderExists as exc:
            raise ApiError("order_exists", order_id=exc.order_id) from exc
        return 201, order_out(order).model_dump(mode="json")

    return await idempotent(
        redis, idempotency_key, f"orders\0{user.user_id}", body.model_dump(mode="json"), handler
    )


@router.get("", responses=problem_responses(401))
async def my_orders(user: CurrentUser, db: DbDep) -> OrderList:
    """Your orders, newest first."""
    return OrderList(items=[order_out(o) for o in await store.list_orders(db, user.customer_id)])


@router.get("/{order_id}", responses=problem_responses(401, 404))
async def get_order(order_id: str, user: CurrentUser, db: DbDep) -> OrderOut:
    """An order, to its buyer, the event's organizer and admins."""
    order = await store.get_order(db, order_id)
    if order is None or not may_see(order, user):
        raise ApiError("not_found", "no such order")
    return order_out(order)
