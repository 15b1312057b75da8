"""Events and seat maps: create, edit, add sections, publish/close/cancel, and
the public reads (list, detail, availability, seats)."""

from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, status
from fastapi.responses import JSONResponse

from api.deps import DbDep, EngineDep, OptionalUser, Organizer, RedisDep, SettingsDep
from api.errors import ApiError
from api.schemas import (
    AvailabilityOut,
    EventIn,
    EventOut,
    EventPage,
    EventPatch,
    SeatOut,
    SeatsOut,
    SectionAvailabilityOut,
    SectionIn,
    SectionOut,
    problem_responses,
)
from engine.client import EngineClient
from engine.errors import EventNotFound
from engine.model import Snapshot, seat_ids
from persistence import events as store
from persistence.events import EventDraft, EventRecord, SectionSpec
from sales import catalog
from sales.access import visible_event
from sales.vocabulary import EventStatus, SeatStatus, SectionKind

router = APIRouter(prefix="/events", tags=["events"])

LIST_GENERATION = "onsale:events:generation"  # bumped to drop every cached page


def event_out(event: EventRecord) -> EventOut:
    return EventOut(
        id=event.id,
        organizer_id=event.organizer_id,
        name=event.name,
        venue=event.venue,
        description=event.description,
        starts_at=event.starts_at,
        currency=event.currency,
        status=event.status,
        hold_ttl_s=event.hold_ttl_s,
        max_tickets_per_customer=event.max_tickets_per_customer,
        created_at=event.created_at,
        published_at=event.published_at,
        sections=[SectionOut(**s.__dict__) for s in event.sections],
    )


async def _changed(request: Request, event_id: str) -> None:
    """Drops this process's cached event and every cached page of the list."""
    request.app.state.event_cache.forget(event_id)
    await request.app.state.redis.incr(LIST_GENERATION)


@router.post("", status_code=status.HTTP_201_CREATED, responses=problem_responses(401, 403, 422))
async def create_event(body: EventIn, user: Organizer, db: DbDep) -> EventOut:
    """A draft event owned by the caller; add sections, then publish."""
    return event_out(await catalog.create_event(db, user.user_id, EventDraft(**body.model_dump())))


@router.patch("/{event_id}", responses=problem_responses(401, 403, 404, 409, 422))
async def update_event(
    event_id: str, body: EventPatch, user: Organizer, request: Request, db: DbDep
) -> EventOut:
    """Drafts: any field. On sale: name, venue and description only."""
    event = await catalog.update_event(db, event_id, body.model_dump(exclude_unset=True), user)
    await _changed(request, event_id)
    return event_out(event)


@router.post(
    "/{event_id}/sections",
    status_code=status.HTTP_201_CREATED,
    responses=problem_responses(401, 403, 404, 409, 422),
)
async def add_section(
    event_id: str, body: SectionIn, user: Organizer, request: Request, db: DbDep
) -> SectionOut:
    section = await catalog.add_section(db, event_id, SectionSpec(**body.model_dump()), user)
    await _changed(request, event_id)
    return SectionOut(**section.__dict__)


@router.post("/{event_id}/publish", responses=problem_responses(401, 403, 404, 409))
async def publish(
    event_id: str, user: Organizer, request: Request, db: DbDep, engine: EngineDep
) -> EventOut:
    """Puts the event on sale: Postgres first, then its inventory into Redis."""
    event = await catalog.publish(db, engine, event_id, user)
    await _changed(request, event_id)
    return event_out(event)


@router.post("/{event_id}/close", responses=problem_responses(401, 403, 404, 409))
async def close(
    event_id: str, user: Organizer, request: Request, db: DbDep, engine: EngineDep
) -> EventOut:
    """Ends the sale: no new holds; holds already placed may still be bought."""
    event = await catalog.end_sale(db, engine, event_id, EventStatus.CLOSED, user)
    await _changed(request, event_id)
    return event_out(event)


@router.post("/{event_id}/cancel", responses=problem_responses(401, 403, 404, 409))
async def cancel(
    event_id: str, user: Organizer, request: Request, db: DbDep, engine: EngineDep
) -> EventOut:
    """Cancels the event: no new holds and no new sales."""
    event = await catalog.end_sale(db, engine, event_id, EventStatus.CANCELLED, user)
    await _changed(request, event_id)
    return event_out(event)


@router.get("", response_model=EventPage)
async def list_events(
    db: DbDep,
    redis: RedisDep,
    settings: SettingsDep,
    page: Annotated[int, Query(ge=1, le=10_000)] = 1,
    size: Annotated[int, Query(ge=1, le=100)] = 20,
) -> Any:
    """Events on sale, newest first (cached for a minute; publishing, closing
    and cancelling drop the cache)."""
    generation = int(await redis.get(LIST_GENERATION) or 0)
    key = f"onsale:events:page:{generation}:{page}:{size}"
    cached = await redis.get(key)
    if cached is not None:
        return JSONResponse(json.loads(cached), headers={"X-Cache": "hit"})
    items, total = await store.list_on_sale(db, page, size)
    body = EventPage(
        items=[event_out(e) for e in items], total=total, page=page, size=size
    ).model_dump(mode="json")
    await redis.set(key, json.dumps(body), ex=settings.events_cache_s)
    return JSONResponse(body, headers={"X-Cache": "miss"})


@router.get("/{event_id}", responses=problem_responses(404))
async def get_event(event_id: str, db: DbDep, user: OptionalUser) -> EventOut:
    return event_out(await visible_event(db, event_id, user))


async def _snapshot(engine: EngineClient, event: EventRecord) -> Snapshot:
    if event.status is EventStatus.DRAFT:
        raise ApiError("event_not_on_sale", "a draft has no availability yet")
    try:
        return await engine.snapshot(event.id)
    except EventNotFound as exc:
        raise ApiError("engine_unavailable", "the event's inventory is being rebuilt") from exc


@router.get("/{event_id}/availability", responses=problem_responses(404, 409))
async def availability(
    event_id: str, db: DbDep, engine: EngineDep, user: OptionalUser
) -> AvailabilityOut:
    """Counts per section now, with the inventory version they belong to."""
    event = await visible_event(db, event_id, user)
    snapshot = await _snapshot(engine, event)
    return AvailabilityOut(
        version=snapshot.version,
        sections=[SectionAvailabilityOut(**s.__dict__) for s in snapshot.sections],
    )


@router.get("/{event_id}/seats", responses=problem_responses(404, 409))
async def seats(
    event_id: str,
    db: DbDep,
    engine: EngineDep,
    user: OptionalUser,
    section: Annotated[str | None, Query(max_length=32)] = None,
) -> SeatsOut:
    """Every seat of the event's seated sections (or of one) with its status."""
    event = await visible_event(db, event_id, user)
    chosen = [
        s for s in event.sections if s.kind is SectionKind.SEATED and section in (None, s.code)
    ]
    if section is not None and not chosen:
        raise ApiError("not_found", f"no seated section {section}")
    snapshot = await _snapshot(engine, event)
    taken = snapshot.seats
    return SeatsOut(
        version=snapshot.version,
        seats=[
            SeatOut(id=seat, status=SeatStatus(taken.get(seat, SeatStatus.AVAILABLE)))
            for s in chosen
            for seat in seat_ids(s.code, s.rows or 0, s.seats_per_row or 0)
        ],
    )
