"""What the hold path needs to know of an event, without Postgres per request.

Per process, for a couple of seconds. Prices, kinds and the hold TTL change
only while an event is a draft, and the engine enforces the on-sale status
itself, so a stale entry can at worst refuse a hold for a moment after
publishing (and then it is refetched).
"""

from __future__ import annotations

import time

from sqlalchemy.ext.asyncio import AsyncEngine

from persistence.events import EventRecord, get_event

TTL_S = 2.0


class EventCache:
    def __init__(self, db: AsyncEngine) -> None:
        self._db = db
        self._entries: dict[str, tuple[float, EventRecord | None]] = {}

    async def get(self, event_id: str, *, want_on_sale: bool = False) -> EventRecord | None:
        now = time.monotonic()
        hit = self._entries.get(event_id)
        if hit is not None and now - hit[0] < TTL_S:
            event = hit[1]
            if not want_on_sale or (event is not None and event.status == "on_sale"):
                return event
        event = await get_event(self._db, event_id)
        if len(self._entries) > 10_000:
            self._entries.clear()
        self._entries[event_id] = (now, event)
        return event

    def forget(self, event_id: str) -> None:
        self._entries.pop(event_id, None)
