"""Stripe's webhooks: verified here, settled by :mod:`sales.settlement`.

200 for every verified event, handled now or before; a failure is a 5xx, so
Stripe redelivers it rather than forgetting it.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from api.errors import ApiError
from api.schemas import problem_responses
from sales.payments import InvalidSignature, Payments
from sales.settlement import handle_stripe_event

router = APIRouter(tags=["payments"])


@router.post("/webhooks/stripe", responses=problem_responses(400, 404))
async def stripe_webhook(request: Request) -> JSONResponse:
    """Stripe → onsale. 200 for every verified event, handled or already seen."""
    state = request.app.state
    payments: Payments | None = state.payments
    if payments is None:
        raise ApiError("not_found", "payments are not configured")
    payload = await request.body()
    try:
        event = payments.verify(payload, request.headers.get("stripe-signature"))
    except InvalidSignature as exc:
        raise ApiError("invalid_signature", str(exc)[:200]) from exc
    if await handle_stripe_event(state.db, state.engine, payments, event):
        return JSONResponse({"received": True})
    return JSONResponse({"received": True, "duplicate": True})
