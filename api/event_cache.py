"""What the hold path needs to know of an event, without Postgres per request.

Per process, for a few seconds. Prices, kinds and the hold TTL change only
while an event is a draft, and the engine enforces the on-sale status itself,
so a stale entry can at worst refuse a hold for a moment after publishing
(then it is refetched). One fetch per event at a time: when an entry goes
stale under load, hundreds of requests wait for the same query instead of
each queueing for a Postgres connection of its own.
"""

from __future__ import annotations

import asyncio
import time

from sqlalchemy.ext.asyncio import AsyncEngine

from persistence.events import EventRecord, get_event
from sales.vocabulary import EventStatus

TTL_S = 5.0
MAX_ENTRIES = 10_000


class EventCache:
    def __init__(self, db: AsyncEngine) -> None:
        self._db = db
        self._entries: dict[str, tuple[float, EventRecord | None]] = {}
        self._fetching: dict[str, asyncio.Future[EventRecord | None]] = {}

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
            event = await get_event(self._db, event_id)
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

    def forget(self, event_id: str) -> None:
        self._entries.pop(event_id, None)
