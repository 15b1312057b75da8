"""Stripe's webhooks: verified here, settled by :mod:`sales.settlement`.

200 for every verified event, handled now or before. A verified event is
never answered 500: anything that keeps it from being settled now (the
engine, Redis or Stripe busy or away) is a 503, so Stripe delivers it again.
"""

from __future__ import annotations

import logging

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from api.errors import ApiError
from api.schemas import problem_responses
from sales.payments import InvalidSignature, Payments
from sales.settlement import Settlement

router = APIRouter(tags=["payments"])
log = logging.getLogger(__name__)


@router.post("/webhooks/stripe", responses=problem_responses(400, 404, 503))
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
    settlement: Settlement = state.settlement
    try:
        first = await settlement.handle(event)
    except Exception as exc:  # Stripe must come back, whatever kept us from settling
        log.exception("stripe event %s not settled now; Stripe will retry", event.get("id"))
        raise ApiError("not_settled", f"{type(exc).__name__}: retry later") from exc
    return JSONResponse({"received": True} if first else {"received": True, "duplicate": True})
