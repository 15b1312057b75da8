"""Orders: checking out a hold, and reading what was bought."""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Request, status

from api.deps import CurrentUser, Customer, DbDep, RedisDep
from api.errors import ApiError
from api.idempotency import idempotent
from api.payments import Payments, PaymentsUnavailable
from api.routers.holds import IdempotencyKey, my_hold, price_of
from api.schemas import (
    OrderIn,
    OrderItemOut,
    OrderList,
    OrderOut,
    PaymentOut,
    RefundOut,
    TicketOut,
    problem_responses,
)
from api.security import Principal
from engine.client import EngineClient
from persistence import events as events_store
from persistence import orders as store
from persistence import payments as payments_store
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
        refunded_at=order.refunded_at,
        status_reason=order.status_reason,
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


def may_see_sale(customer_id: str, organizer_id: uuid.UUID | None, user: Principal) -> bool:
    """An order and its tickets: to the buyer, the event's organizer, admins."""
    return (
        user.role == "admin"
        or customer_id == user.customer_id
        or (organizer_id is not None and organizer_id == user.user_id)
    )


def may_see(order: OrderRecord, user: Principal) -> bool:
    return may_see_sale(order.customer_id, order.event_organizer_id, user)


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=OrderOut,
    responses=problem_responses(401, 403, 404, 409, 410, 422, 503),
)
async def create_order(
    body: OrderIn,
    user: Customer,
    request: Request,
    db: DbDep,
    redis: RedisDep,
    idempotency_key: IdempotencyKey = None,
) -> Any:
    """Checks out one of your active holds: an order awaiting payment, with a
    Stripe PaymentIntent for the amount priced here. The hold is kept for the
    payment window (``ONSALE_PAYMENT_WINDOW_S``), never longer. One order per hold."""

    async def handler() -> tuple[int, Any]:
        state = request.app.state
        event, hold = await my_hold(request, body.hold_id, user)
        current = await events_store.get_event(db, event.id)  # not cached: cancel is final
        if current is None or current.status == "cancelled":
            raise ApiError("event_ended", "the event is cancelled")
        if hold.status == "confirmed" and hold.order_id:
            raise ApiError("order_exists", order_id=hold.order_id)
        if hold.status != "held":
            raise ApiError("hold_expired", f"the hold is {hold.status}")
        amount, items = price_of(event, hold.seats, hold.section, hold.quantity)
        order_id = store.order_id_for(hold.hold_id)
        payments: Payments | None = state.payments
        intent = None
        if payments is not None:  # first: idempotent by order id, so a retry reuses it
            try:
                intent = await payments.create_intent(
                    order_id=order_id, event_id=event.id, amount_cents=amount,
                    currency=event.currency,
                )  # fmt: skip
            except PaymentsUnavailable as exc:
                raise ApiError("payments_unavailable", str(exc)[:200]) from exc
        until_ms = int((time.time() + state.settings.payment_window_s) * 1000)
        held = await state.engine.extend(event.id, hold.hold_id, user.customer_id, until_ms)
        try:
            order = await store.create_order(
                db,
                order_id=order_id,
                event_id=event.id,
                customer_id=user.customer_id,
                hold_id=hold.hold_id,
                amount_cents=amount,
                currency=event.currency,
                items=items,
                expires_at=datetime.fromtimestamp(held.expires_at_ms / 1000, UTC),
            )
        except OrderExists as exc:
            raise ApiError("order_exists", order_id=exc.order_id) from exc
        out = order_out(order)
        if intent is not None and payments is not None:
            await payments_store.record_payment(
                db, order_id=order_id, provider=payments.provider,
                payment_intent_id=intent.id, amount_cents=amount,
                currency=event.currency, status=intent.status,
            )  # fmt: skip
            out.payment = PaymentOut(
                provider=payments.provider,
                payment_intent_id=intent.id,
                client_secret=intent.client_secret,
            )
        return 201, out.model_dump(mode="json")

    return await idempotent(
        redis, idempotency_key, f"orders\0{user.user_id}", body.model_dump(mode="json"), handler
    )


@router.post(
    "/{order_id}/refund",
    status_code=status.HTTP_202_ACCEPTED,
    responses=problem_responses(401, 404, 409, 503),
)
async def refund_order(order_id: str, user: CurrentUser, request: Request, db: DbDep) -> RefundOut:
    """Refunds a paid order through Stripe; once the refund succeeds the seats
    go back on sale and the order becomes ``refunded`` (written behind)."""
    order = await store.get_order(db, order_id)
    if order is None or not may_see(order, user):
        raise ApiError("not_found", "no such order")
    if order.status == "refunded":
        return RefundOut(order_id=order.id, status="refunded", refund_status="succeeded")
    if order.status != "paid":
        raise ApiError("order_not_paid", f"the order is {order.status}")
    payments: Payments | None = request.app.state.payments
    payment = await payments_store.payment_of(db, order.id)
    if payments is None or payment is None:
        raise ApiError("payments_unavailable", "no payment provider for this order")
    try:
        refund_status = await payments.refund(payment.payment_intent_id, reason_key="requested")
    except PaymentsUnavailable as exc:
        raise ApiError("payments_unavailable", str(exc)[:200]) from exc
    if refund_status == "succeeded":
        await return_to_sale(request.app.state.engine, order)
    return RefundOut(order_id=order.id, status="refund_pending", refund_status=refund_status)


async def return_to_sale(engine: EngineClient, order: OrderRecord) -> None:
    """The engine frees the order's seats or GA places (idempotent per order)
    and appends the refund to the outbox, which marks it in Postgres."""
    seats = tuple(i["seat"] for i in order.items if i.get("seat"))
    general = next((i for i in order.items if not i.get("seat")), None)
    await engine.refund(
        order.event_id,
        order.id,
        order.hold_id,
        seats=seats or None,
        section=general["section"] if general else None,
        quantity=int(general["quantity"]) if general else len(seats),
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
    out = order_out(order)
    payment = await payments_store.payment_of(db, order.id)
    if payment is not None:  # the client secret only comes with POST /orders
        out.payment = PaymentOut(provider="stripe", payment_intent_id=payment.payment_intent_id)
    return out
