"""Holds: a buyer's seats or GA tickets, reserved for the event's hold TTL."""

from __future__ import annotations

import hashlib
import json
import re
from datetime import UTC, datetime
from typing import Any
from urllib.parse import unquote

from fastapi import APIRouter, Request, Response, status
from starlette.types import Receive, Scope, Send

from api.deps import CurrentUser, EngineDep, EventsDep, PaymentsDep, parse_json, principal_of
from api.errors import ApiError, as_problem
from api.observability import HOLDS, send_answer, send_problem
from api.schemas import HoldIn, HoldOut, problem_responses
from api.security import InvalidToken, read_queue_pass
from engine.errors import EngineError
from engine.model import HoldPlaced, HoldView, QueuePass
from persistence.events import EventRecord
from sales import holds
from sales.access import Principal
from sales.vocabulary import EventStatus, Role

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
QUEUE_PASS_DOC = {
    "name": "Onsale-Queue-Pass",
    "in": "header",
    "required": False,
    "schema": {"type": "string", "maxLength": 2048},
    "description": "the buyer's waiting-room pass (POST /events/{id}/queue/join), "
    "needed while the event's waiting room is on",
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


HOLD_PATH = re.compile(r"^/events/([^/]+)/holds$")
HOLD_ROUTE = "/events/{event_id}/holds"
NO_STORE = "private, no-store"


async def hold_answer(
    state: Any,
    event_id: str,
    authorization: str,
    idempotency_key: str | None,
    raw: bytes,
    queue_pass: str | None = None,
) -> tuple[int, bytes, dict[str, str]]:
    """The hold route's answer (status, JSON body, headers), however the
    request arrived: raises ApiError, EngineError or SaleRefused to refuse.

    With an Idempotency-Key the hold id and a fingerprint of the body are
    derived from it, and the engine is the one that answers a retry: the hold
    again (``Idempotent-Replayed: true``), the same refusal, or
    ``idempotency_key_reused`` for another body. No Redis round trip here."""
    user = await principal_of(state, authorization)
    if user.role is not Role.CUSTOMER:
        raise ApiError("forbidden", "this needs the role customer")
    body = parse_json(raw, HoldIn)
    if idempotency_key is not None and not 1 <= len(idempotency_key) <= 255:
        raise ApiError("validation_error", "Idempotency-Key must be 1 to 255 characters")
    await state.limiter.hit("holds", user.customer_id)
    event = await state.event_cache.get(event_id, want_on_sale=True)
    if event is None or event.status is EventStatus.DRAFT:
        raise ApiError("not_found", "no such event")
    if event.status is not EventStatus.ON_SALE:
        raise ApiError("event_not_on_sale", f"the event is {event.status}")
    admission = None if queue_pass is None else _admission(state, queue_pass, user, event_id)
    fingerprint = ""
    if idempotency_key is not None:
        canonical = json.dumps(body.model_dump(mode="json"), sort_keys=True)
        fingerprint = hashlib.sha256(canonical.encode()).hexdigest()[:16]
    try:
        placed = await holds.place(
            state.engine,
            event,
            user,
            holds.new_hold_id(event_id, user, idempotency_key),
            seats=body.seats,
            section=body.section,
            quantity=body.quantity or 0,
            fingerprint=fingerprint,
            queue_pass=admission,
        )
    except EngineError as exc:
        HOLDS.labels(exc.code).inc()
        if exc.context.get("replayed"):
            problem = as_problem(exc)
            problem.headers["Idempotent-Replayed"] = "true"
            raise problem from exc
        raise
    HELD.inc()
    headers = {"Idempotent-Replayed": "true"} if placed.replayed else {}
    return 201, json.dumps(hold_json(event, placed)).encode(), headers


def _admission(state: Any, token: str, user: Principal, event_id: str) -> QueuePass:
    """The waiting-room pass sent with a hold: signed for this account and
    this event, unexpired. The engine checks it is the admission on record,
    in the same script call as the hold."""
    try:
        claims = read_queue_pass(state.jwt_secret, token)
    except InvalidToken as exc:
        raise ApiError("queue_pass_invalid", str(exc)) from exc
    if claims.user_id != user.user_id or claims.event_id != event_id:
        raise ApiError("queue_pass_invalid", "this pass is another account's or another event's")
    return QueuePass(claims.nonce, claims.issued_ms, claims.expires_ms)


@router.post(
    HOLD_ROUTE,
    status_code=status.HTTP_201_CREATED,
    response_model=HoldOut,
    openapi_extra={
        "parameters": [IDEMPOTENCY_KEY_DOC, QUEUE_PASS_DOC],
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
    # Served by place_hold_asgi in production (RequestMiddleware sends this
    # path there first); this route documents the contract in OpenAPI and
    # answers the same should a request ever reach it.
    status_code, body, headers = await hold_answer(
        request.app.state,
        event_id,
        request.headers.get("authorization", ""),
        request.headers.get("idempotency-key"),
        await request.body(),
        request.headers.get("onsale-queue-pass"),
    )
    return Response(body, status_code, headers, media_type="application/json")


async def place_hold_asgi(scope: Scope, receive: Receive, send: Send, event_id: str) -> None:
    """POST /events/{id}/holds without Starlette's routing, FastAPI's request
    handling and their middleware: the hot path of an on-sale, where that
    stack costs more CPU per request than the hold itself. The same answers,
    errors and headers as :func:`place_hold`."""
    headers = dict(scope["headers"])
    chunks = []
    more = True
    try:
        while more:
            message = await receive()
            chunks.append(message.get("body", b""))
            more = message.get("more_body", False)
        key = headers.get(b"idempotency-key")
        admission = headers.get(b"onsale-queue-pass")
        status_code, body, extra = await hold_answer(
            scope["app"].state,
            unquote(event_id),
            headers.get(b"authorization", b"").decode("latin-1"),
            None if key is None else key.decode("latin-1"),
            b"".join(chunks),
            None if admission is None else admission.decode("latin-1"),
        )
    except Exception as exc:  # the same mapping as the app's exception handlers
        await send_problem(send, exc)
        return
    await send_answer(send, status_code, body, extra)


@router.get("/holds/{hold_id}", responses=problem_responses(401, 404, 410))
async def get_hold(
    hold_id: str, user: CurrentUser, events: EventsDep, engine: EngineDep
) -> HoldOut:
    event, hold = await holds.live_hold(events, engine, hold_id, user)
    return hold_out(event, hold)


@router.delete(
    "/holds/{hold_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses=problem_responses(401, 404, 409, 503),
)
async def release_hold(
    hold_id: str, user: CurrentUser, events: EventsDep, engine: EngineDep, payments: PaymentsDep
) -> Response:
    """Gives the seats back at once (and again: releasing twice is fine). A
    hold with an order awaiting payment takes the order with it (its
    PaymentIntent is cancelled at Stripe); once paid, it is refused."""
    await holds.release(events, engine, hold_id, user, payments)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
