"""The waiting room: an event's settings, joining, and one's place (sales.queue)."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC
from typing import Any

from fastapi import APIRouter, Request, WebSocket, WebSocketDisconnect
from fastapi.responses import HTMLResponse

from api.deps import Customer, DbDep, EngineDep, Organizer, principal_of
from api.errors import ApiError
from api.queue_stream import QueueViewer
from api.routers.live import (
    CLOSE_NOT_FOUND,
    CLOSE_POLICY,
    CLOSE_TRY_LATER,
    PAGE_HEADERS,
    PING,
    PING_INTERVAL_S,
    SEND_TIMEOUT_S,
    STATIC,
    close_socket,
    live_sockets,
    origin_allowed,
)
from api.schemas import QueueIn, QueueOut, QueuePlaceOut, problem_responses
from api.security import issue_queue_pass
from persistence.events import EventRecord
from persistence.queues import QueueRecord
from sales import queue
from sales.access import Principal, may_see_event
from sales.queue import RoomState, Standing
from sales.vocabulary import Role

router = APIRouter(tags=["waiting room"])


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


@router.put("/events/{event_id}/queue", responses=problem_responses(401, 403, 404, 409, 422))
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


@router.get("/events/{event_id}/queue", responses=problem_responses(404))
async def get_queue(event_id: str, request: Request, db: DbDep, engine: EngineDep) -> QueueOut:
    """The waiting room's settings, its state, how many wait and the current
    admission rate (public). A browser (``Accept: text/html``) gets the
    waiting-room page instead, which joins and shows the caller's place."""
    if "text/html" in request.headers.get("accept", ""):
        return HTMLResponse(  # type: ignore[return-value]
            STATIC.joinpath("queue.html").read_text(encoding="utf-8"), headers=PAGE_HEADERS
        )
    event = await _event(request, event_id, None)
    room = await queue.room_state(db, engine, event)
    if room is None:
        raise ApiError("not_found", "this event has no waiting room")
    return _room_out(room)


@router.post(
    "/events/{event_id}/queue/join",
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
    "/events/{event_id}/queue/me",
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


# ---------------------------------------------------------------- live place

AUTH_TIMEOUT_S = 10.0


@router.websocket("/ws/events/{event_id}/queue")
async def queue_stream(websocket: WebSocket, event_id: str) -> None:
    """Where the caller stands, pushed as it changes (docs/API.md, "Waiting
    room"): the access token comes in the first message, never the URL
    (addresses end up in logs). The same origin check, handshake rate and
    per-address socket cap as the seat-map stream."""
    state = websocket.app.state
    if not origin_allowed(websocket, state.settings.live_allowed_origins):
        await websocket.close(CLOSE_POLICY, "origin not allowed")
        return
    address = websocket.client.host if websocket.client else "-"
    await websocket.accept()
    try:
        await state.limiter.hit("live", address)
    except ApiError:
        await close_socket(websocket, CLOSE_TRY_LATER, "rate_limited")
        return
    open_here = live_sockets(state)
    if open_here[address] >= state.settings.live_max_per_address:
        await close_socket(websocket, CLOSE_TRY_LATER, "too many sockets from this address")
        return
    open_here[address] += 1
    try:
        await _queue_stream(websocket, event_id)
    finally:
        open_here[address] -= 1
        if open_here[address] <= 0:
            del open_here[address]


async def _queue_stream(websocket: WebSocket, event_id: str) -> None:
    state = websocket.app.state
    try:
        first = await asyncio.wait_for(websocket.receive_text(), AUTH_TIMEOUT_S)
        message = json.loads(first)
        if not isinstance(message, dict) or message.get("type") != "auth":
            raise ValueError("the first message must be {type: auth, token}")
        user = await principal_of(state, f"Bearer {message.get('token', '')}")
        if user.role is not Role.CUSTOMER:
            raise ApiError("forbidden", "this needs the role customer")
    except (TimeoutError, ValueError, ApiError, WebSocketDisconnect) as exc:
        reason = exc.code if isinstance(exc, ApiError) else "send {type: auth, token} first"
        await close_socket(websocket, CLOSE_POLICY, reason)
        return
    event = await state.event_cache.get(event_id)
    if event is None or not may_see_event(event, user):
        await close_socket(websocket, CLOSE_NOT_FOUND, "no such event")
        return

    def admitted(me: dict[str, Any]) -> dict[str, Any]:
        token = issue_queue_pass(
            state.jwt_secret,
            user.user_id,
            event.id,
            str(me["nonce"]),
            int(me.get("issued_at_ms") or 0),
            int(me["expires_at_ms"]),
        )
        expires = queue.timestamp(int(me["expires_at_ms"])).isoformat().replace("+00:00", "Z")
        return {"type": "admitted", "pass": token, "pass_expires_at": expires}

    viewer = QueueViewer(user.customer_id, admitted)
    async with state.queue_watch.watch(event.id, viewer):
        receiver = asyncio.create_task(_drain(websocket))
        try:
            while not receiver.done():
                text = await viewer.next(PING_INTERVAL_S)
                await asyncio.wait_for(websocket.send_text(text or PING), SEND_TIMEOUT_S)
        except (TimeoutError, WebSocketDisconnect, RuntimeError):
            pass  # stalled or gone
        finally:
            receiver.cancel()
            await asyncio.gather(receiver, return_exceptions=True)


async def _drain(websocket: WebSocket) -> None:
    """Reads (and ignores) what the client sends, to see it go."""
    while True:
        message = await websocket.receive()
        if message["type"] == "websocket.disconnect":
            return
