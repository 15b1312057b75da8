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
from api.security import Principal
from engine.errors import EventNotFound
from persistence import events as store
from persistence.catalog import PublishError, SectionSpec, publish_event
from persistence.events import EventConflict, EventRecord

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
        status=event.status,  # type: ignore[arg-type]
        hold_ttl_s=event.hold_ttl_s,
        max_tickets_per_customer=event.max_tickets_per_customer,
        created_at=event.created_at,
        published_at=event.published_at,
        sections=[
            SectionOut(
                code=s.code,
                name=s.name,
                kind=s.kind,  # type: ignore[arg-type]
                price_cents=s.price_cents,
                capacity=s.capacity,
                rows=s.rows,
                seats_per_row=s.seats_per_row,
            )
            for s in event.sections
        ],
    )


def may_manage(event: EventRecord, user: Principal | None) -> bool:
    return user is not None and (user.role == "admin" or event.organizer_id == user.user_id)


async def visible_event(request: Request, event_id: str, user: Principal | None) -> EventRecord:
    """The event if this caller may see it: drafts only to their owner and admins."""
    event = await store.get_event(request.app.state.db, event_id)
    if event is None or (event.status == "draft" and not may_manage(event, user)):
        raise ApiError("not_found", "no such event")
    return event


async def managed_event(request: Request, event_id: str, user: Principal) -> EventRecord:
    """The event if this caller owns it (or is an admin)."""
    event = await visible_event(request, event_id, user)
    if not may_manage(event, user):
        raise ApiError("forbidden", "only the event's organizer or an admin may do this")
    return event


async def _changed(request: Request, event_id: str) -> None:
    request.app.state.event_cache.forget(event_id)
    await request.app.state.redis.incr(LIST_GENERATION)


@router.post("", status_code=status.HTTP_201_CREATED, responses=problem_responses(401, 403, 422))
async def create_event(body: EventIn, user: Organizer, db: DbDep) -> EventOut:
    """A draft event owned by the caller; add sections, then publish."""
    try:
        return event_out(await store.create_event(db, user.user_id, **body.model_dump()))
    except store.UnknownOrganizer as exc:
        raise ApiError("invalid_token", "the account no longer exists") from exc


@router.patch("/{event_id}", responses=problem_responses(401, 403, 404, 409, 422))
async def update_event(
    event_id: str, body: EventPatch, user: Organizer, request: Request, db: DbDep
) -> EventOut:
    """Drafts: any field. On sale: name, venue and description only."""
    await managed_event(request, event_id, user)
    try:
        event = await store.update_event(db, event_id, body.model_dump(exclude_unset=True))
    except EventConflict as exc:
        raise ApiError(exc.code, exc.detail) from exc
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
    await managed_event(request, event_id, user)
    spec = SectionSpec(**body.model_dump())
    try:
        section = await store.add_section(db, event_id, spec)
    except EventConflict as exc:
        raise ApiError(exc.code, exc.detail) from exc
    await _changed(request, event_id)
    return SectionOut(**section.__dict__)


@router.post("/{event_id}/publish", responses=problem_responses(401, 403, 404, 409))
async def publish(
    event_id: str, user: Organizer, request: Request, db: DbDep, engine: EngineDep
) -> EventOut:
    """Puts the event on sale: Postgres first, then its inventory into Redis."""
    await managed_event(request, event_id, user)
    try:
        await publish_event(db, engine, event_id)
    except PublishError as exc:
        raise ApiError(exc.code if exc.code != "not_found" else "not_found", str(exc)) from exc
    await _changed(request, event_id)
    return event_out(await visible_event(request, event_id, user))


async def _end(request: Request, event_id: str, user: Principal, new_status: str) -> EventOut:
    await managed_event(request, event_id, user)
    try:
        previous, event = await store.end_event(request.app.state.db, event_id, new_status)
    except EventConflict as exc:
        raise ApiError(exc.code, exc.detail) from exc
    if previous in ("on_sale", "closed"):  # its inventory is in Redis: stop the sale there
        try:
            await request.app.state.engine.set_status(event_id, new_status)
        except EventNotFound:
            pass  # nothing loaded (Redis lost it): a rebuild reads the new status
    await _changed(request, event_id)
    return event_out(event)


@router.post("/{event_id}/close", responses=problem_responses(401, 403, 404, 409))
async def close(event_id: str, user: Organizer, request: Request) -> EventOut:
    """Ends the sale: no new holds; holds already placed may still be bought."""
    return await _end(request, event_id, user, "closed")


@router.post("/{event_id}/cancel", responses=problem_responses(401, 403, 404, 409))
async def cancel(event_id: str, user: Organizer, request: Request) -> EventOut:
    """Cancels the event: no new holds and no new sales."""
    return await _end(request, event_id, user, "cancelled")


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
async def get_event(event_id: str, request: Request, user: OptionalUser) -> EventOut:
    return event_out(await visible_event(request, event_id, user))


async def _snapshot(request: Request, event: EventRecord) -> Any:
    if event.status == "draft":
        raise ApiError("event_not_on_sale", "a draft has no availability yet")
    try:
        return await request.app.state.engine.snapshot(event.id)
    except EventNotFound as exc:
        raise ApiError("engine_unavailable", "the event's inventory is being rebuilt") from exc


@router.get("/{event_id}/availability", responses=problem_responses(404, 409))
async def availability(event_id: str, request: Request, user: OptionalUser) -> AvailabilityOut:
    """Counts per section now, with the inventory version they belong to."""
    event = await visible_event(request, event_id, user)
    snapshot = await _snapshot(request, event)
    return AvailabilityOut(
        version=snapshot.version,
        sections=[SectionAvailabilityOut(**s.__dict__) for s in snapshot.sections],
    )


@router.get("/{event_id}/seats", responses=problem_responses(404, 409))
async def seats(
    event_id: str,
    request: Request,
    user: OptionalUser,
    section: Annotated[str | None, Query(max_length=32)] = None,
) -> SeatsOut:
    """Every seat of the event's seated sections (or of one) with its status."""
    event = await visible_event(request, event_id, user)
    chosen = [s for s in event.sections if s.kind == "seated" and section in (None, s.code)]
    if section is not None and not chosen:
        raise ApiError("not_found", f"no seated section {section}")
    snapshot = await _snapshot(request, event)
    taken = snapshot.seats
    return SeatsOut(
        version=snapshot.version,
        seats=[
            SeatOut(id=seat, status=taken.get(seat, "available"))
            for s in chosen
            for row in range(1, (s.rows or 0) + 1)
            for number in range(1, (s.seats_per_row or 0) + 1)
            for seat in (f"{s.code}-{row}-{number}",)
        ],
    )
