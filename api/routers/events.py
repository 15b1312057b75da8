"""Events and seat maps: create, edit, add sections, publish/close/cancel, and
the public reads (list, detail, availability, seats)."""

from __future__ import annotations

import json
import re
from typing import Annotated, Any
from urllib.parse import unquote

from fastapi import APIRouter, Query, Request, status
from fastapi.responses import JSONResponse, Response
from starlette.types import Receive, Scope, Send

from api.deps import (
    Audit,
    AuditDep,
    DbDep,
    EngineDep,
    OptionalUser,
    Organizer,
    RedisDep,
    SettingsDep,
    signed_principal,
)
from api.errors import ApiError
from api.event_cache import Rendered
from api.observability import send_answer, send_problem
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
from sales.access import Principal, may_see_event, visible_event
from sales.catalog import event_from_card
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
        max_held_per_customer=event.max_held_per_customer,
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
    event_id: str, body: EventPatch, user: Organizer, request: Request, db: DbDep, engine: EngineDep
) -> EventOut:
    """Drafts: any field. On sale: name, venue and description only."""
    changes = body.model_dump(exclude_unset=True)
    event = await catalog.update_event(db, engine, event_id, changes, user)
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


async def _status_changed(request: Request, audit: Audit, event: EventRecord) -> EventOut:
    """After publish, close or cancel: caches dropped, the change audited."""
    await _changed(request, event.id)
    await audit("event.status", event.id, status=str(event.status))
    return event_out(event)


@router.post("/{event_id}/publish", responses=problem_responses(401, 403, 404, 409))
async def publish(
    event_id: str, user: Organizer, request: Request, db: DbDep, engine: EngineDep, audit: AuditDep
) -> EventOut:
    """Puts the event on sale: Postgres first, then its inventory into Redis."""
    event = await catalog.publish(db, engine, event_id, user)
    return await _status_changed(request, audit, event)


@router.post("/{event_id}/close", responses=problem_responses(401, 403, 404, 409))
async def close(
    event_id: str, user: Organizer, request: Request, db: DbDep, engine: EngineDep, audit: AuditDep
) -> EventOut:
    """Ends the sale: no new holds; holds already placed may still be bought."""
    event = await catalog.end_sale(db, engine, event_id, EventStatus.CLOSED, user)
    return await _status_changed(request, audit, event)


@router.post("/{event_id}/cancel", responses=problem_responses(401, 403, 404, 409))
async def cancel(
    event_id: str, user: Organizer, request: Request, db: DbDep, engine: EngineDep, audit: AuditDep
) -> EventOut:
    """Cancels the event: no new holds and no new sales."""
    event = await catalog.end_sale(db, engine, event_id, EventStatus.CANCELLED, user)
    return await _status_changed(request, audit, event)


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


PUBLIC = "public, max-age=1"  # a CDN may hold a public read for a second
PRIVATE = "private, no-store"  # a draft, seen by its organizer only
NOT_MODIFIED: dict[int | str, dict[str, Any]] = {
    304: {"description": "Not modified: the `If-None-Match` tag is current"}
}


def _tagged(request: Request, body: bytes | None, tag: str, cache: str) -> Response:
    """``body`` with its ETag, or 304 when the caller already has that tag."""
    headers = {"ETag": tag, "Cache-Control": cache}
    if tag in request.headers.get("if-none-match", ""):
        return Response(status_code=304, headers=headers)
    return Response(body, media_type="application/json", headers=headers)


async def _readable(request: Request, event_id: str, user: Principal | None) -> EventRecord:
    """The event if this caller may see it, from the process's cache of cards."""
    event = await request.app.state.event_cache.get(event_id)
    if event is None or not may_see_event(event, user):
        raise ApiError("not_found", "no such event")
    return event


@router.get(
    "/{event_id}",
    response_model=EventOut,
    responses={**NOT_MODIFIED, **problem_responses(401, 404)},
)
async def get_event(
    event_id: str, request: Request, db: DbDep, engine: EngineDep, user: OptionalUser
) -> Response:
    """The event with its sections; from its card in Redis (ETag: its
    revision), or, for a draft, from Postgres to its organizer."""
    public = await _public_event(request.app.state, event_id)
    if public is None:  # a draft (or no such event)
        event = await visible_event(db, event_id, user)
        return Response(
            event_out(event).model_dump_json().encode(),
            media_type="application/json",
            headers={"Cache-Control": PRIVATE},
        )
    revision, body = public
    return _tagged(request, body, f'"e{revision}"', PUBLIC)


async def _public_event(state: Any, event_id: str) -> tuple[int, bytes] | None:
    """The event from its card (published events have one), rendered once
    per revision; None for a draft or no such event."""
    engine: EngineClient = state.engine
    card = await engine.card(event_id)
    if card is None:
        return None
    revision, raw = card
    rendered: Rendered = state.rendered
    body = rendered.get("event", event_id, revision)
    if body is None:
        body = rendered.put(
            "event", event_id, revision, event_out(event_from_card(raw)).model_dump_json().encode()
        )
    return revision, body


# ------------------------------------------------ the lean path of public reads
#
# GET /events/{id} and /availability are most of a spike's requests (every
# buyer reads them before a hold, and a sold-out crowd keeps reading them).
# RequestMiddleware serves them here, ahead of FastAPI's routing and
# dependencies, with the same answers; anything these do not answer (a draft,
# no such event, an inventory being rebuilt) goes on to the routes above.

EVENT_PATH = re.compile(r"^/events/([^/]+)$")
EVENT_ROUTE = "/events/{event_id}"
AVAILABILITY_PATH = re.compile(r"^/events/([^/]+)/availability$")
AVAILABILITY_ROUTE = "/events/{event_id}/availability"


def _check_caller(scope: Scope) -> None:
    """A token, if one came, is signed and unexpired (as the routes'
    OptionalUser insists: a bad token is an error, not anonymity); raises
    ApiError otherwise. Its version is not looked up: a published event reads
    the same to everyone, so a revoked token shows nothing here."""
    for name, value in scope["headers"]:
        if name == b"authorization":
            signed_principal(value.decode("latin-1"), scope["app"].state.jwt_secret)


async def _send_tagged(scope: Scope, send: Send, body: bytes, tag: str) -> None:
    headers = {"ETag": tag, "Cache-Control": PUBLIC}
    for name, value in scope["headers"]:
        if name == b"if-none-match" and tag in value.decode("latin-1"):
            await send_answer(send, 304, b"", headers)
            return
    await send_answer(send, 200, body, headers)


async def public_event_asgi(scope: Scope, receive: Receive, send: Send, event_id: str) -> bool:
    """GET /events/{id} of a published event; False: the route answers."""
    try:
        _check_caller(scope)
        public = await _public_event(scope["app"].state, unquote(event_id))
        if public is None:
            return False
        revision, body = public
    except Exception as exc:  # the same mapping as the app's exception handlers
        await send_problem(send, exc)
        return True
    await _send_tagged(scope, send, body, f'"e{revision}"')
    return True


async def availability_asgi(scope: Scope, receive: Receive, send: Send, event_id: str) -> bool:
    """GET /events/{id}/availability of an event on sale or ended; False: the
    route answers (a draft, no such event, an inventory being rebuilt)."""
    state = scope["app"].state
    try:
        _check_caller(scope)
        event = await state.event_cache.get(unquote(event_id))
        if event is None or not may_see_event(event, None):
            return False
        version, body = await _availability(state, event)
    except ApiError:
        return False  # its refusals are the route's to give
    except Exception as exc:
        await send_problem(send, exc)
        return True
    await _send_tagged(scope, send, body, f'"v{version}"')
    return True


async def _inventory(
    request: Request, engine: EngineClient, event: EventRecord, kind: str
) -> tuple[int, bytes | None]:
    """The inventory's version now and this process's rendering of ``kind``
    at it, if it has one."""
    if event.status is EventStatus.DRAFT:
        raise ApiError("event_not_on_sale", "a draft has no availability yet")
    version = await _version(engine, event)
    return version, request.app.state.rendered.get(kind, event.id, version)


async def _version(engine: EngineClient, event: EventRecord) -> int:
    """The inventory's version now. A finished event whose inventory was
    retired from Redis (persistence.retire) is rebuilt from Postgres first."""
    version = await engine.version(event.id)
    if version is None and await engine.restore(event.id):
        version = await engine.version(event.id)
    if version is None:
        raise ApiError("engine_unavailable", "the event's inventory is being rebuilt")
    return version


async def _snapshot(engine: EngineClient, event: EventRecord, *, seats: bool) -> Snapshot:
    try:
        return await engine.snapshot(event.id, seats=seats)
    except EventNotFound as exc:
        raise ApiError("engine_unavailable", "the event's inventory is being rebuilt") from exc


@router.get(
    "/{event_id}/availability",
    response_model=AvailabilityOut,
    responses={**NOT_MODIFIED, **problem_responses(401, 404, 409, 503)},
)
async def availability(
    event_id: str, request: Request, engine: EngineDep, user: OptionalUser
) -> Response:
    """Counts per section now, with the inventory version they belong to
    (ETag: the version). Rendered once per version in each process."""
    event = await _readable(request, event_id, user)
    version, body = await _availability(request.app.state, event)
    return _tagged(request, body, f'"v{version}"', PUBLIC)


async def _availability(state: Any, event: EventRecord) -> tuple[int, bytes]:
    """The counts of an event that has an inventory, rendered once per version."""
    if event.status is EventStatus.DRAFT:
        raise ApiError("event_not_on_sale", "a draft has no availability yet")
    engine: EngineClient = state.engine
    version = await _version(engine, event)
    body = state.rendered.get("availability", event.id, version)
    if body is None:
        snapshot = await _snapshot(engine, event, seats=False)
        version = snapshot.version
        out = AvailabilityOut(
            version=version,
            sections=[SectionAvailabilityOut(**s.__dict__) for s in snapshot.sections],
        )
        body = state.rendered.put("availability", event.id, version, out.model_dump_json().encode())
    return version, body


@router.get(
    "/{event_id}/seats",
    response_model=SeatsOut,
    responses={**NOT_MODIFIED, **problem_responses(401, 404, 409, 429, 503)},
)
async def seats(
    event_id: str,
    request: Request,
    engine: EngineDep,
    user: OptionalUser,
    section: Annotated[str | None, Query(max_length=32)] = None,
) -> Response:
    """Every seat of the event's seated sections (or of one) with its status
    (ETag: the inventory version). The map of a version is built once per
    process."""
    client = request.client.host if request.client else "-"
    await request.app.state.limiter.hit("seats", client)
    event = await _readable(request, event_id, user)
    chosen = [
        s for s in event.sections if s.kind is SectionKind.SEATED and section in (None, s.code)
    ]
    if section is not None and not chosen:
        raise ApiError("not_found", f"no seated section {section}")
    kind = f"seats:{section or ''}"
    version, body = await _inventory(request, engine, event, kind)
    if body is None:
        snapshot = await _snapshot(engine, event, seats=True)
        version, taken = snapshot.version, snapshot.seats
        out = SeatsOut(
            version=version,
            seats=[
                SeatOut(id=seat, status=SeatStatus(taken.get(seat, SeatStatus.AVAILABLE)))
                for s in chosen
                for seat in seat_ids(s.code, s.rows or 0, s.seats_per_row or 0)
            ],
        )
        body = request.app.state.rendered.put(
            kind, event.id, version, out.model_dump_json().encode()
        )
    return _tagged(request, body, f'"v{version}"', PUBLIC)
