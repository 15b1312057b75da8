"""Orders: checking out a hold, reading what was bought, refunds."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, status

from api.deps import (
    AuditDep,
    CurrentUser,
    Customer,
    DbDep,
    EngineDep,
    EventsDep,
    IdempotencyKey,
    PaymentsDep,
    RedisDep,
    SettingsDep,
)
from api.idempotency import idempotent
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
from persistence.orders import OrderRecord
from sales import orders, refunds
from sales.checkout import checkout

router = APIRouter(prefix="/orders", tags=["orders"])


def order_out(order: OrderRecord) -> OrderOut:
    return OrderOut(
        order_id=order.id,
        event_id=order.event_id,
        hold_id=order.hold_id,
        status=orders.status_shown(order),
        amount_cents=order.amount_cents,
        currency=order.currency,
        created_at=order.created_at,
        expires_at=order.expires_at,
        confirmed_at=order.confirmed_at,
        refunded_at=order.refunded_at,
        status_reason=order.status_reason,
        items=[OrderItemOut(**item.to_json()) for item in order.items],
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
    Stripe PaymentIntent for the amount priced here. The hold keeps its
    expiry; once Stripe reports a payment under way it is kept until the
    payment window (``ONSALE_PAYMENT_WINDOW_S``) from checkout ends, never
    longer. One order per hold."""
    state = request.app.state

    async def handler() -> tuple[int, Any]:
        done = await checkout(
            state.engine,
            state.event_cache,
            state.redis,
            state.payments,
            hold_id=body.hold_id,
            user=user,
            payment_window_s=state.settings.payment_window_s,
        )
        out = order_out(done.order)
        if done.intent is not None and done.provider is not None:
            out.payment = PaymentOut(
                provider=done.provider,
                payment_intent_id=done.intent.id,
                client_secret=done.intent.client_secret,
            )
        return 201, out.model_dump(mode="json")

    return await idempotent(
        redis, idempotency_key, f"orders\0{user.user_id}", body.model_dump(mode="json"), handler
    )


@router.post(
    "/{order_id}/refund",
    status_code=status.HTTP_202_ACCEPTED,
    responses=problem_responses(401, 403, 404, 409, 503),
)
async def refund_order(
    order_id: str,
    user: CurrentUser,
    db: DbDep,
    engine: EngineDep,
    events: EventsDep,
    payments: PaymentsDep,
    settings: SettingsDep,
    audit: AuditDep,
) -> RefundOut:
    """Refunds a paid order through Stripe; once the refund succeeds the seats
    go back on sale and the order becomes ``refunded`` (written behind)."""
    done = await refunds.refund_order(
        db, engine, events, payments, order_id, user, claim_s=settings.refund_claim_s
    )
    if not done.done:
        await audit("order.refund", done.order_id, refund_status=done.provider_status)
    return RefundOut(
        order_id=done.order_id,
        status="refunded" if done.done else "refund_pending",
        refund_status=done.provider_status,
    )


@router.get("", responses=problem_responses(401))
async def my_orders(
    user: CurrentUser, db: DbDep, engine: EngineDep, events: EventsDep, redis: RedisDep
) -> OrderList:
    """Your orders, newest first (a paid order reads paid at once)."""
    mine = await orders.my_orders(db, engine, events, redis, user)
    return OrderList(items=[order_out(o) for o in mine])


@router.get("/{order_id}", responses=problem_responses(401, 404))
async def get_order(
    order_id: str, user: CurrentUser, db: DbDep, engine: EngineDep, events: EventsDep
) -> OrderOut:
    """An order, to its buyer, the event's organizer and admins: the engine's
    word while it knows the order (a paid order reads paid at once), then
    Postgres's."""
    order, intent_id = await orders.order_with_payment(db, engine, events, order_id, user)
    out = order_out(order)
    if intent_id is not None:  # the client secret only comes with POST /orders
        out.payment = PaymentOut(provider="stripe", payment_intent_id=intent_id)
    return out
