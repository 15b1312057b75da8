"""The waiting room of an on-sale: settings, joining, and where a buyer stands.

The organizer sets it up (``PUT /events/{id}/queue``): when it opens, how
many it admits a minute (or ``auto``), how many may shop at once, how long a
pass lasts. Buyers join; everyone who joins before the open gets a uniformly
random place at the open (drawn here from the OS's CSPRNG, kept by the
engine: joining again returns the same place), and after the open it is first
come, first served. The event's actor admits on its timer (lua/queue.lua);
an admission is a signed pass (``api.security.issue_queue_pass``) that the
hold route needs while the room is on, checked against the admission on
record in the same script call as the hold.
"""

from __future__ import annotations

import logging
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from sqlalchemy.ext.asyncio import AsyncEngine

from persistence.events import EventRecord
from persistence.queues import QueueRecord, get_queue, put_queue
from sales.access import Principal, may_manage
from sales.errors import SaleRefused
from sales.vocabulary import EventStatus

log = logging.getLogger(__name__)

RANDOM_RESOLUTION = 2**53  # a place is k / 2**53: a double holds it exactly


class QueueEngine(Protocol):
    async def queue(self, event_id: str, action: str, *args: Any) -> dict[str, Any]: ...

    async def ensure_actor(self, event_id: str) -> None: ...


@dataclass(frozen=True)
class Standing:
    """Where one buyer stands, as the engine says (lua/queue.lua ``view``)."""

    status: str  # waiting | admitted | expired | none
    ahead: int | None
    eta_s: float | None
    state: str
    waiting: int
    nonce: str | None = None
    issued_at_ms: int | None = None
    expires_at_ms: int | None = None


@dataclass(frozen=True)
class RoomState:
    settings: QueueRecord
    state: str  # pre_queue | open | sold_out | closed
    waiting: int
    active: int
    rate_per_minute: float
    admitted_total: int


async def configure(
    db: AsyncEngine, engine: QueueEngine, event: EventRecord, room: QueueRecord, user: Principal
) -> RoomState:
    """Stores the settings (Postgres: a rebuild starts from them) and applies
    them to the engine at once; its organizer's or an admin's."""
    if not may_manage(event, user):
        raise SaleRefused("not_found", "no such event")
    if event.status in (EventStatus.CLOSED, EventStatus.CANCELLED):
        raise SaleRefused("event_not_on_sale", f"the event is {event.status}")
    await put_queue(db, room)
    raw = await engine.queue(event.id, "configure", room.engine_settings())
    if event.status is EventStatus.ON_SALE:
        await engine.ensure_actor(event.id)  # its timer admits
    return _room(room, raw)


async def room_state(db: AsyncEngine, engine: QueueEngine, event: EventRecord) -> RoomState | None:
    room = await get_queue(db, event.id)
    if room is None:
        return None
    return _room(room, await engine.queue(event.id, "state"))


def _room(room: QueueRecord, raw: dict[str, Any]) -> RoomState:
    return RoomState(
        room,
        str(raw["state"]),
        int(raw["waiting"]),
        int(raw["active"]),
        float(raw["rate"]),
        int(raw["admitted_total"]),
    )


async def join(engine: QueueEngine, event: EventRecord, user: Principal) -> Standing:
    """A place for the caller (the same one if they already have one)."""
    if event.status is not EventStatus.ON_SALE:
        raise SaleRefused("event_not_on_sale", f"the event is {event.status}")
    place = secrets.randbelow(RANDOM_RESOLUTION) / RANDOM_RESOLUTION
    raw = await engine.queue(event.id, "join", user.customer_id, repr(place))
    return standing(raw)


async def me(engine: QueueEngine, event: EventRecord, user: Principal) -> Standing:
    return standing(await engine.queue(event.id, "me", user.customer_id))


def standing(raw: dict[str, Any]) -> Standing:
    ahead = raw.get("ahead")
    eta = None
    if raw["status"] == "waiting" and ahead is not None:
        rate = float(raw.get("rate") or 0)
        until_open = max(0.0, (int(raw.get("opens_at") or 0) - int(raw["now"])) / 1000)
        # An estimate at the current rate; None while nothing is admitted.
        eta = round(until_open + (int(ahead) + 1) * 60 / rate, 1) if rate > 0 else None
    return Standing(
        str(raw["status"]),
        None if ahead is None else int(ahead),
        eta,
        str(raw["state"]),
        int(raw["waiting"]),
        raw.get("nonce"),
        raw.get("issued_at_ms"),
        raw.get("expires_at_ms"),
    )


async def note_checkout(engine: QueueEngine, event_id: str, seconds: float) -> None:
    """Tells the event's waiting room how long a checkout took ("auto"
    admits fewer while checkouts are slow). Best effort: a checkout never
    fails for it."""
    try:
        await engine.queue(event_id, "checkout", str(round(seconds * 1000, 1)))
    except Exception:  # Redis trouble shows on the sale's own calls
        log.debug("could not note a checkout's time for %s", event_id, exc_info=True)


def timestamp(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)
