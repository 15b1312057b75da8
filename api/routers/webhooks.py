"""Stripe's webhooks: a payment confirms its order's sale exactly once.

Every event is verified (``Stripe-Signature``) and handled idempotently: the
engine confirms a sale once per order id whatever is redelivered, and the
event id is recorded after handling, so a replay is a 200 that changes
nothing while a failure is retried by Stripe rather than forgotten.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from api.errors import ApiError
from api.payments import InvalidSignature, Payments, PaymentsUnavailable
from api.routers.orders import return_to_sale
from api.schemas import problem_responses
from engine.client import EngineClient
from engine.errors import (
    EventNotOnSale,
    HoldExpired,
    HoldNotFound,
    SeatsUnavailable,
    SoldOut,
)
from persistence import orders as orders_store
from persistence import payments as payments_store
from persistence.orders import OrderRecord

router = APIRouter(tags=["payments"])
log = logging.getLogger(__name__)


@router.post("/webhooks/stripe", responses=problem_responses(400, 404))
async def stripe_webhook(request: Request) -> JSONResponse:
    """Stripe → onsale. 200 for every verified event, handled or already seen."""
    payments: Payments | None = request.app.state.payments
    if payments is None:
        raise ApiError("not_found", "payments are not configured")
    payload = await request.body()
    try:
        event = payments.verify(payload, request.headers.get("stripe-signature"))
    except InvalidSignature as exc:
        raise ApiError("invalid_signature", str(exc)[:200]) from exc
    db = request.app.state.db
    if await payments_store.webhook_seen(db, event["id"]):
        return JSONResponse({"received": True, "duplicate": True})
    await _handle(request, event)
    await payments_store.mark_webhook_handled(db, event["id"], payments.provider)
    return JSONResponse({"received": True})


async def _handle(request: Request, event: dict[str, Any]) -> None:
    kind = event.get("type", "")
    obj = event.get("data", {}).get("object", {})
    intent_id = obj.get("payment_intent") if kind.startswith("charge.") else obj.get("id")
    order_id = (obj.get("metadata") or {}).get("order_id")
    db = request.app.state.db
    if not order_id and intent_id:  # charge events carry the intent, not our metadata
        order_id = await _order_of_intent(db, intent_id)
    order = await orders_store.get_order(db, order_id) if order_id else None
    if order is None:
        log.info("stripe %s for no order of ours (%s)", kind, intent_id)
        return
    state = request.app.state
    if kind == "payment_intent.succeeded":
        await payments_store.set_payment_status(db, intent_id, "succeeded")
        await _paid(state.engine, state.payments, db, order, intent_id)
    elif kind == "payment_intent.payment_failed":
        # The buyer may try another card while the hold lasts; then it frees itself.
        await payments_store.set_payment_status(db, intent_id, "failed")
    elif kind == "payment_intent.canceled":
        await payments_store.set_payment_status(db, intent_id, "canceled")
        if await payments_store.end_unpaid_order(db, order.id, "cancelled", "payment_canceled"):
            await state.engine.release(order.event_id, order.hold_id)
    elif kind == "charge.refunded" and order.status == "paid":
        await return_to_sale(state.engine, order)  # a refund made in Stripe's dashboard


async def _paid(
    engine: EngineClient, payments: Payments, db: Any, order: OrderRecord, intent_id: str
) -> None:
    """Money arrived: sell the hold; if it lapsed, sell the same seats if they
    are still free; if someone else has them, give the money back."""
    if order.status in ("paid", "refunded"):
        return
    meta = {"amount_cents": order.amount_cents, "currency": order.currency, "payment": intent_id}
    try:
        await engine.confirm(order.event_id, order.hold_id, order.id, meta)
        return
    except (HoldExpired, HoldNotFound):
        pass
    seats = tuple(i["seat"] for i in order.items if i.get("seat"))
    general = next((i for i in order.items if not i.get("seat")), None)
    try:
        await engine.confirm(
            order.event_id,
            order.hold_id,
            order.id,
            meta,
            late=True,
            customer_id=order.customer_id,
            seats=seats or None,
            section=general["section"] if general else None,
            quantity=int(general["quantity"]) if general else len(seats),
        )
        log.info("order %s paid late; its seats were still free and are sold", order.id)
    except (SeatsUnavailable, SoldOut, EventNotOnSale) as exc:
        log.warning("order %s paid after its seats were resold (%s): refunding", order.id, exc.code)
        try:
            await payments.refund(intent_id, reason_key="seats_resold")
        except PaymentsUnavailable:
            raise  # 500: Stripe redelivers the event and the refund is tried again
        await payments_store.end_unpaid_order(db, order.id, "refunded", "seats_resold")


async def _order_of_intent(db: Any, intent_id: str) -> str | None:
    from sqlalchemy import select

    from persistence.models import Payment

    async with db.connect() as conn:
        return (
            await conn.execute(
                select(Payment.order_id).where(Payment.payment_intent_id == intent_id)
            )
        ).scalar_one_or_none()
