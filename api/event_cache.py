"""What the API needs to know of an event, without Postgres per request.

Events on sale (and closed or cancelled ones) are read from their card in
Redis (``sales.catalog``); drafts, which have none, from Postgres, and only
their organizer sees them. Each process keeps what it read for a few seconds:
prices, kinds and the hold TTL change only while an event is a draft, and the
engine enforces the on-sale status itself, so a stale entry can at worst
refuse a hold for a moment after publishing (then it is read again). One read
per event at a time: when an entry goes stale under load, hundreds of requests
wait for the same read instead of each making its own.

Public reads that must be current (``GET /events/{id}``) ask for the card's
revision each time and keep the rendered answer per revision
(:class:`Rendered`).
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict

from sqlalchemy.ext.asyncio import AsyncEngine

from engine.client import EngineClient
from persistence.events import EventRecord, get_event
from sales.catalog import event_from_card
from sales.vocabulary import EventStatus

TTL_S = 5.0
MAX_ENTRIES = 10_000


class EventCache:
    def __init__(self, db: AsyncEngine, engine: EngineClient) -> None:
        self._db = db
        self._engine = engine
        self._entries: dict[str, tuple[float, EventRecord | None]] = {}
        self._fetching: dict[str, asyncio.Future[EventRecord | None]] = {}
        self._cards: dict[tuple[str, int], EventRecord] = {}

    async def get(self, event_id: str, *, want_on_sale: bool = False) -> EventRecord | None:
        hit = self._entries.get(event_id)
        if hit is not None and time.monotonic() - hit[0] < TTL_S:
            event = hit[1]
            if not want_on_sale or (event is not None and event.status is EventStatus.ON_SALE):
                return event
        pending = self._fetching.get(event_id)
        if pending is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future[EventRecord | None] = asyncio.get_running_loop().create_future()
        self._fetching[event_id] = future
        try:
            event = await self.current(event_id)
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: no "never retrieved" warning if none waited
            raise
        else:
            future.set_result(event)
            if len(self._entries) >= MAX_ENTRIES:
                self._entries.clear()
            self._entries[event_id] = (time.monotonic(), event)
            return event
        finally:
            del self._fetching[event_id]

    async def current(self, event_id: str) -> EventRecord | None:
        """The event now: its card (one Redis read, parsed once per revision),
        or for a draft Postgres."""
        card = await self._engine.card(event_id)
        if card is None:
            return await get_event(self._db, event_id)
        revision, body = card
        event = self._cards.get((event_id, revision))
        if event is None:
            if len(self._cards) >= MAX_ENTRIES:
                self._cards.clear()
            event = self._cards[(event_id, revision)] = event_from_card(body)
        return event

    def forget(self, event_id: str) -> None:
        self._entries.pop(event_id, None)


class Rendered:
    """Answers rendered once per process and version (an event's card
    revision, an inventory version), least recently used dropped first."""

    def __init__(self, max_entries: int = 2_000) -> None:
        self._max = max_entries
        self._entries: OrderedDict[tuple[str, str, int], bytes] = OrderedDict()

    def get(self, kind: str, event_id: str, version: int) -> bytes | None:
        key = (kind, event_id, version)
        body = self._entries.get(key)
        if body is not None:
            self._entries.move_to_end(key)
        return body

    def put(self, kind: str, event_id: str, version: int, body: bytes) -> bytes:
        self._entries[(kind, event_id, version)] = body
        if len(self._entries) > self._max:
            self._entries.popitem(last=False)
        return body
