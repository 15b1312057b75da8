"""Holds: a buyer's seats or GA tickets, reserved for the event's hold TTL."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Request, Response, status

from api.deps import CurrentUser, EngineDep, EventsDep, customer, parse_body
from api.errors import ApiError
from api.idempotency import idempotent
from api.observability import HOLDS
from api.schemas import HoldIn, HoldOut, problem_responses
from engine.errors import EngineError
from engine.model import HoldPlaced, HoldView
from persistence.events import EventRecord
from sales import holds
from sales.vocabulary import EventStatus

router = APIRouter(tags=["holds"])
HELD = HOLDS.labels("held")

# Read from request.headers in the hold route (a declared Header parameter costs
# FastAPI an annotation walk per request); documented here instead.
IDEMPOTENCY_KEY_DOC = {
    "name": "Idempotency-Key",
    "in": "header",
    "required": False,
    "schema": {"type": "string", "maxLength": 255},
    "description": "a retry with the same key gets the first answer",
}


def hold_json(event: EventRecord, hold: HoldPlaced) -> dict[str, Any]:
    """:class:`HoldOut` as JSON, built directly: the hot path's response."""
    expires_at = datetime.fromtimestamp(hold.expires_at_ms / 1000, UTC)
    return {
        "hold_id": hold.hold_id,
        "event_id": event.id,
        "status": hold.status,
        "seats": list(hold.seats) if hold.seats else None,
        "section": None if hold.seats else hold.section,
        "quantity": hold.quantity,
        "amount_cents": holds.amount(event, hold),
        "currency": event.currency,
        "expires_at": expires_at.isoformat().replace("+00:00", "Z"),  # as pydantic writes it
    }


def hold_out(event: EventRecord, hold: HoldPlaced | HoldView) -> HoldOut:
    return HoldOut(
        hold_id=hold.hold_id,
        event_id=event.id,
        status=hold.status,
        seats=list(hold.seats) if hold.seats else None,
        section=None if hold.seats else hold.section,
        quantity=hold.quantity,
        amount_cents=holds.amount(event, hold),
        currency=event.currency,
        expires_at=datetime.fromtimestamp(hold.expires_at_ms / 1000, UTC),
    )


@router.post(
    "/events/{event_id}/holds",
    status_code=status.HTTP_201_CREATED,
    response_model=HoldOut,
    openapi_extra={
        "parameters": [IDEMPOTENCY_KEY_DOC],
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/HoldIn"}}},
        },
    },
    responses=problem_responses(400, 401, 403, 404, 409, 422, 429, 503),
)
async def place_hold(event_id: str, request: Request) -> Any:
    """Holds seats (``{seats}``) or general-admission tickets (``{section,
    quantity}``) for the event's hold TTL. Never oversells: every hold of an
    event goes through that event's one actor and one atomic script."""
    # The hot path reads its caller, body and header itself rather than through
    # FastAPI's dependency solving, which costs more per request than the rest
    # of the route; the contract is unchanged (documented above, same errors).
    user = await customer(request)
    body = await parse_body(request, HoldIn)
    state = request.app.state
    idempotency_key = request.headers.get("idempotency-key")
    await state.limiter.hit("holds", user.customer_id)
    event = await state.event_cache.get(event_id, want_on_sale=True)
    if event is None or event.status is EventStatus.DRAFT:
        raise ApiError("not_found", "no such event")
    if event.status is not EventStatus.ON_SALE:
        raise ApiError("event_not_on_sale", f"the event is {event.status}")

    async def handler() -> tuple[int, Any]:
        try:
            placed = await holds.place(
                state.engine,
                event,
                user,
                holds.new_hold_id(event_id, user, idempotency_key),
                seats=body.seats,
                section=body.section,
                quantity=body.quantity or 0,
            )
        except EngineError as exc:
            HOLDS.labels(exc.code).inc()
            raise
        HELD.inc()
        return 201, hold_json(event, placed)

    return await idempotent(
        state.redis,
        idempotency_key,
        f"holds\0{user.user_id}\0{event_id}",
        body.model_dump(mode="json"),
        handler,
    )


@router.get("/holds/{hold_id}", responses=problem_responses(401, 404, 410))
async def get_hold(
    hold_id: str, user: CurrentUser, events: EventsDep, engine: EngineDep
) -> HoldOut:
    event, hold = await holds.live_hold(events, engine, hold_id, user)
    return hold_out(event, hold)


@router.delete(
    "/holds/{hold_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses=problem_responses(401, 404, 409),
)
async def release_hold(
    hold_id: str, user: CurrentUser, events: EventsDep, engine: EngineDep
) -> Response:
    """Gives the seats back at once (and again: releasing twice is fine)."""
    await holds.release(events, engine, hold_id, user)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
