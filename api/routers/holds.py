"""Holds: a buyer's seats or GA tickets, reserved for the event's hold TTL."""

from __future__ import annotations

import hashlib
import secrets
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Header, Request, Response, status

from api.deps import CurrentUser, EngineDep, customer, parse_body
from api.errors import ApiError
from api.idempotency import idempotent
from api.observability import HOLDS
from api.schemas import HoldIn, HoldOut, problem_responses
from api.security import Principal
from engine.client import EngineClient
from engine.errors import EngineError
from engine.model import HoldPlaced, HoldView
from persistence.events import EventRecord

router = APIRouter(tags=["holds"])
HELD = HOLDS.labels("held")

IdempotencyKey = Annotated[
    str | None,
    Header(alias="Idempotency-Key", description="a retry with the same key gets the first answer"),
]


# Read from request.headers in the hold route (a declared Header parameter costs
# FastAPI an annotation walk per request); documented here instead.
IDEMPOTENCY_KEY_DOC = {
    "name": "Idempotency-Key",
    "in": "header",
    "required": False,
    "schema": {"type": "string", "maxLength": 255},
    "description": "a retry with the same key gets the first answer",
}


def new_hold_id(event_id: str, user: Principal, idempotency_key: str | None) -> str:
    """Hold ids name their event (GET /holds/{id} needs no lookup). With an
    Idempotency-Key the id is derived from it, so even a retry that outlives
    the stored response cannot hold twice: the engine answers it as a replay."""
    if idempotency_key:
        token = hashlib.sha256(f"{user.user_id}\0{idempotency_key}".encode()).hexdigest()[:24]
    else:
        token = secrets.token_hex(12)
    return f"hl_{token}.{event_id}"


def event_of_hold(hold_id: str) -> str:
    prefix, _, event_id = hold_id.partition(".")
    if not prefix.startswith("hl_") or not event_id:
        raise ApiError("not_found", "no such hold")
    return event_id


def price_of(
    event: EventRecord, seats: tuple[str, ...] | None, section: str | None, quantity: int
) -> tuple[int, list[dict[str, Any]]]:
    """Amount and items of a hold, from the event's section prices."""
    items: list[dict[str, Any]] = []
    if seats:
        for seat in seats:
            found = event.section(seat.rsplit("-", 2)[0])
            if found is None or found.kind != "seated":
                raise ApiError("unknown_seat", f"no seat {seat} in this event", unavailable=[seat])
            items.append(
                {
                    "seat": seat,
                    "section": found.code,
                    "quantity": 1,
                    "price_cents": found.price_cents,
                }
            )
    else:
        found = event.section(section or "")
        if found is None:
            raise ApiError("unknown_section", f"no section {section} in this event")
        if found.kind != "general":
            raise ApiError("wrong_section_kind", f"section {section} is held by seat")
        items.append(
            {"section": found.code, "quantity": quantity, "price_cents": found.price_cents}
        )
    return sum(i["price_cents"] * i["quantity"] for i in items), items


def hold_json(event: EventRecord, hold: HoldPlaced) -> dict[str, Any]:
    """:class:`HoldOut` as JSON, built directly: the hot path's response."""
    amount, _ = price_of(event, hold.seats, hold.section, hold.quantity)
    expires_at = datetime.fromtimestamp(hold.expires_at_ms / 1000, UTC)
    return {
        "hold_id": hold.hold_id,
        "event_id": event.id,
        "status": hold.status,
        "seats": list(hold.seats) if hold.seats else None,
        "section": None if hold.seats else hold.section,
        "quantity": hold.quantity,
        "amount_cents": amount,
        "currency": event.currency,
        "expires_at": expires_at.isoformat().replace("+00:00", "Z"),  # as pydantic writes it
    }


def hold_out(event: EventRecord, hold: HoldPlaced | HoldView) -> HoldOut:
    amount, _ = price_of(event, hold.seats, hold.section, hold.quantity)
    return HoldOut(
        hold_id=hold.hold_id,
        event_id=event.id,
        status=hold.status,  # type: ignore[arg-type]
        seats=list(hold.seats) if hold.seats else None,
        section=None if hold.seats else hold.section,
        quantity=hold.quantity,
        amount_cents=amount,
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
    engine: EngineClient = state.engine
    await state.limiter.hit("holds", user.customer_id)
    event = await state.event_cache.get(event_id, want_on_sale=True)
    if event is None or event.status == "draft":
        raise ApiError("not_found", "no such event")
    if event.status != "on_sale":
        raise ApiError("event_not_on_sale", f"the event is {event.status}")

    async def handler() -> tuple[int, Any]:
        seats = tuple(body.seats) if body.seats else None
        price_of(event, seats, body.section, body.quantity or len(seats or ()))
        hold_id = new_hold_id(event_id, user, idempotency_key)
        try:
            if seats:
                placed = await engine.hold_seats(
                    event_id, user.customer_id, seats, ttl_s=event.hold_ttl_s, hold_id=hold_id
                )
            else:
                placed = await engine.hold_quantity(
                    event_id,
                    user.customer_id,
                    body.section or "",
                    body.quantity or 0,
                    ttl_s=event.hold_ttl_s,
                    hold_id=hold_id,
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


async def my_hold(request: Request, hold_id: str, user: Principal) -> tuple[EventRecord, HoldView]:
    event_id = event_of_hold(hold_id)
    event = await request.app.state.event_cache.get(event_id)
    hold = await request.app.state.engine.hold(event_id, hold_id) if event else None
    if event is None or hold is None or hold.customer_id != user.customer_id:
        raise ApiError("not_found", "no such hold")  # someone else's hold does not exist for you
    return event, hold


@router.get("/holds/{hold_id}", responses=problem_responses(401, 404, 410))
async def get_hold(hold_id: str, user: CurrentUser, request: Request) -> HoldOut:
    event, hold = await my_hold(request, hold_id, user)
    if hold.status in ("expired", "released"):
        raise ApiError("hold_expired", f"the hold is {hold.status}")
    return hold_out(event, hold)


@router.delete(
    "/holds/{hold_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses=problem_responses(401, 404, 409),
)
async def release_hold(
    hold_id: str, user: CurrentUser, request: Request, engine: EngineDep
) -> Response:
    """Gives the seats back at once (and again: releasing twice is fine)."""
    event, hold = await my_hold(request, hold_id, user)
    if hold.status == "confirmed":
        raise ApiError("already_confirmed", "the hold was bought; refund the order instead")
    released = await engine.release(event.id, hold_id, user.customer_id)
    if released.status == "confirmed":
        raise ApiError("already_confirmed", "the hold was bought; refund the order instead")
    return Response(status_code=status.HTTP_204_NO_CONTENT)
