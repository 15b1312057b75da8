"""The live seat map: the WebSocket stream viewers subscribe to, and the page
that draws it. The fan-out itself is :mod:`api.live`."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections import Counter
from importlib import resources
from typing import Any
from urllib.parse import urlsplit

from fastapi import APIRouter, WebSocket
from fastapi.responses import HTMLResponse

from api.broadcast import EXTENSION
from api.errors import ApiError
from api.live import LiveHub, Viewer, ViewerTooSlow
from engine.errors import EngineError
from sales.vocabulary import EventStatus

router = APIRouter(tags=["live"])

STATIC = resources.files("api").joinpath("static")
PING_INTERVAL_S = 15.0
SEND_TIMEOUT_S = 10.0  # a socket that takes this long to take one message is stalled

# Close codes: 1008 policy (too slow, other origin, bad messages), 1013 try
# again later (busy, or over the address's rate or socket cap), 4404 no such event.
CLOSE_POLICY, CLOSE_TRY_LATER, CLOSE_NOT_FOUND = 1008, 1013, 4404
CLOSE_TOO_SLOW = CLOSE_POLICY
PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}
PING = json.dumps({"type": "ping"})
BAD_MESSAGES_MAX = 5  # answered with an error each; the next one closes the socket
BAD_MESSAGE = json.dumps(
    {"type": "error", "code": "bad_message", "detail": 'send {"type":"resync"} or {"type":"pong"}'}
)


@router.get("/events/{event_id}/live", response_class=HTMLResponse, include_in_schema=False)
async def live_page(event_id: str) -> HTMLResponse:
    """The seat-map page; its script reads the event id from the address. It
    runs only its own script and styles, talks only to this host, and may not
    be framed (a buyer's hold button inside someone else's page)."""
    return HTMLResponse(
        STATIC.joinpath("live.html").read_text(encoding="utf-8"), headers=PAGE_HEADERS
    )


@router.websocket("/ws/events/{event_id}")
async def live_stream(websocket: WebSocket, event_id: str) -> None:
    """A snapshot, then merged deltas, of one event's availability
    (docs/API.md, "Live seat map"). A browser page of another origin is
    refused at the handshake (403); an address over its handshake rate or its
    open sockets is told to come back later (close 1013)."""
    state = websocket.app.state
    if not origin_allowed(websocket, state.settings.live_allowed_origins):
        await websocket.close(CLOSE_POLICY, "origin not allowed")  # before accept: 403
        return
    address = websocket.client.host if websocket.client else "-"
    try:
        await state.limiter.hit("live", address)
    except ApiError:
        await websocket.accept()
        await close_socket(websocket, CLOSE_TRY_LATER, "rate_limited")
        return
    open_here: Counter[str] = live_sockets(state)
    if open_here[address] >= state.settings.live_max_per_address:
        await websocket.accept()
        await close_socket(websocket, CLOSE_TRY_LATER, "too many sockets from this address")
        return
    open_here[address] += 1
    try:
        await _stream(websocket, event_id)
    finally:
        open_here[address] -= 1
        if open_here[address] <= 0:
            del open_here[address]


def origin_allowed(websocket: WebSocket, allowed: str) -> bool:
    """No Origin (not a browser), any with "*", those listed, or else only a
    page served by the host the socket is opened on."""
    origin = websocket.headers.get("origin")
    if origin is None or allowed.strip() == "*":
        return True
    if allowed.strip():
        return origin in {o.strip() for o in allowed.split(",")}
    return urlsplit(origin).netloc == websocket.headers.get("host", "")


def live_sockets(state: Any) -> Counter[str]:
    """Open seat-map sockets of this worker, by client address."""
    if not hasattr(state, "live_sockets"):
        state.live_sockets = Counter()
    return state.live_sockets


async def _stream(websocket: WebSocket, event_id: str) -> None:
    state = websocket.app.state
    event = await state.event_cache.get(event_id)
    await websocket.accept()
    if event is None or event.status is EventStatus.DRAFT:
        await websocket.close(CLOSE_NOT_FOUND, "no such event")
        return
    hub: LiveHub = state.live
    async with hub.watch(event_id, websocket.scope["extensions"].get(EXTENSION)) as viewer:
        sender = asyncio.create_task(_send(websocket, viewer))
        receiver = asyncio.create_task(_receive(websocket, viewer))
        try:
            await asyncio.wait((sender, receiver), return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (sender, receiver):
                task.cancel()
            await asyncio.gather(sender, receiver, return_exceptions=True)


async def _send(websocket: WebSocket, viewer: Viewer) -> None:
    """This viewer's only writer: waits on nothing but its own socket."""
    try:
        while True:
            text = await viewer.next(PING_INTERVAL_S)
            viewer.sending = True
            await asyncio.wait_for(websocket.send_text(text or PING), SEND_TIMEOUT_S)
            viewer.sending = False
    except ViewerTooSlow:
        await close_socket(websocket, CLOSE_TOO_SLOW, "too slow: reconnect for a fresh snapshot")
    except EngineError as exc:  # the inventory is gone or being rebuilt
        await close_socket(websocket, CLOSE_TRY_LATER, exc.code)
    except TimeoutError:
        pass  # stalled: even a close frame would wait; the connection is let go


async def _receive(websocket: WebSocket, viewer: Viewer) -> None:
    """Viewers may ask for a fresh snapshot (``resync``) and answer pings; a
    client that keeps sending anything else is closed (1008), not answered
    for ever."""
    bad = 0
    while True:
        message = await websocket.receive()
        if message["type"] == "websocket.disconnect":
            return
        try:
            kind = json.loads(message.get("text") or "").get("type")
        except (ValueError, AttributeError):
            kind = None
        if kind == "resync":
            viewer.resync()
        elif kind != "pong":
            bad += 1
            if bad > BAD_MESSAGES_MAX:
                await close_socket(websocket, CLOSE_POLICY, "too many bad messages")
                return
            viewer.say(BAD_MESSAGE)


async def close_socket(websocket: WebSocket, code: int, reason: str) -> None:
    with contextlib.suppress(Exception):
        await asyncio.wait_for(websocket.close(code, reason), SEND_TIMEOUT_S)
