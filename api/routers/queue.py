"""The waiting room: an event's settings, joining, and one's place (sales.queue)."""

from __future__ import annotations

from datetime import UTC
from typing import Any

from fastapi import APIRouter, Request

from api.deps import Customer, DbDep, EngineDep, Organizer
from api.errors import ApiError
from api.schemas import QueueIn, QueueOut, QueuePlaceOut, problem_responses
from api.security import issue_queue_pass
from persistence.events import EventRecord
from persistence.queues import QueueRecord
from sales import queue
from sales.access import Principal, may_see_event
from sales.queue import RoomState, Standing

router = APIRouter(prefix="/events", tags=["waiting room"])


async def _event(request: Request, event_id: str, user: Principal | None) -> EventRecord:
    event = await request.app.state.event_cache.get(event_id)
    if event is None or not may_see_event(event, user):
        raise ApiError("not_found", "no such event")
    return event


def _room_out(room: RoomState) -> QueueOut:
    settings = room.settings
    return QueueOut(
        enabled=settings.enabled,
        opens_at=settings.opens_at,
        admit_per_minute=settings.admit_per_minute or "auto",
        max_active=settings.max_active,
        pass_ttl_s=settings.pass_ttl_s,
        pre_open_order=settings.pre_open_order,  # type: ignore[arg-type]
        state=room.state,  # type: ignore[arg-type]
        waiting=room.waiting,
        active=room.active,
        admission_rate_per_minute=round(room.rate_per_minute, 1),
        admitted_total=room.admitted_total,
    )


def _place_out(request: Request, event: EventRecord, user: Principal, place: Standing) -> Any:
    out = QueuePlaceOut(
        status=place.status,  # type: ignore[arg-type]
        state=place.state,  # type: ignore[arg-type]
        ahead=place.ahead,
        eta_s=place.eta_s,
        waiting=place.waiting,
    )
    if place.status == "admitted" and place.nonce and place.expires_at_ms:
        out.pass_ = issue_queue_pass(
            request.app.state.jwt_secret,
            user.user_id,
            event.id,
            place.nonce,
            int(place.issued_at_ms or 0),
            int(place.expires_at_ms),
        )
        out.pass_expires_at = queue.timestamp(int(place.expires_at_ms))
    return out.model_dump(mode="json", by_alias=True)


@router.put("/{event_id}/queue", responses=problem_responses(401, 403, 404, 409, 422))
async def put_queue(
    event_id: str,
    body: QueueIn,
    user: Organizer,
    request: Request,
    db: DbDep,
    engine: EngineDep,
) -> QueueOut:
    """Sets up (or changes, or switches off) the event's waiting room."""
    event = await _event(request, event_id, user)
    record = QueueRecord(
        event.id,
        body.enabled,
        body.opens_at.astimezone(UTC),
        None if body.admit_per_minute == "auto" else int(body.admit_per_minute),
        body.max_active,
        body.pass_ttl_s,
        body.pre_open_order,
    )
    return _room_out(await queue.configure(db, engine, event, record, user))


@router.get("/{event_id}/queue", responses=problem_responses(404))
async def get_queue(event_id: str, request: Request, db: DbDep, engine: EngineDep) -> QueueOut:
    """The waiting room's settings, its state, how many wait and the current
    admission rate (public)."""
    event = await _event(request, event_id, None)
    room = await queue.room_state(db, engine, event)
    if room is None:
        raise ApiError("not_found", "this event has no waiting room")
    return _room_out(room)


@router.post(
    "/{event_id}/queue/join",
    response_model=QueuePlaceOut,
    responses=problem_responses(401, 403, 404, 409, 429),
)
async def join_queue(event_id: str, user: Customer, request: Request, engine: EngineDep) -> Any:
    """A place in the waiting room (one per account: joining again answers
    the same place). Before the open, a random place at the open; after it,
    the back of the line. Once admitted: the pass."""
    await request.app.state.limiter.hit("queue", user.customer_id)
    event = await _event(request, event_id, user)
    place = await queue.join(engine, event, user)
    await _ensure_admitting(request, engine, event.id)
    return _place_out(request, event, user, place)


@router.get(
    "/{event_id}/queue/me",
    response_model=QueuePlaceOut,
    responses=problem_responses(401, 403, 404, 429),
)
async def my_place(event_id: str, user: Customer, request: Request, engine: EngineDep) -> Any:
    """Where the caller stands (``none`` if they have not joined)."""
    await request.app.state.limiter.hit("queue", user.customer_id)
    event = await _event(request, event_id, user)
    return _place_out(request, event, user, await queue.me(engine, event, user))


async def _ensure_admitting(request: Request, engine: Any, event_id: str) -> None:
    """The event's actor admits on its timer: make sure it runs (once per
    process and event; an actor that dies is restarted by Ray)."""
    state = request.app.state
    started: set[str] | None = getattr(state, "queue_actors", None)
    if started is None:
        started = state.queue_actors = set()
    if event_id not in started:
        await engine.ensure_actor(event_id)
        started.add(event_id)
