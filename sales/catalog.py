"""Running an event: creating it, editing it, putting it on sale and ending it.

The one way an event comes to be (the API, the demo seed, the tests and the
benchmarks all call :func:`create_event`): a draft owned by its organizer,
then its sections, each checked as the API checks them. Publishing writes
Postgres, then loads the engine; closing and cancelling stop the sale in
Postgres, then in the engine.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Sequence
from dataclasses import asdict
from datetime import datetime
from typing import Any, Protocol

from sqlalchemy.ext.asyncio import AsyncEngine

from engine.errors import EventNotFound
from persistence import events as event_store
from persistence.catalog import InventoryLoader, PublishError, publish_event
from persistence.events import (
    MAX_SEATS_PER_EVENT,
    EventConflict,
    EventDraft,
    EventRecord,
    SectionRecord,
    SectionSpec,
)
from sales.access import Principal, managed_event
from sales.errors import SaleRefused
from sales.vocabulary import EventStatus, SectionKind


class CardStore(Protocol):
    """Where the public reads find an event (the engine client, or its scripts)."""

    async def put_card(self, event_id: str, revision: int, card: str) -> None: ...


class Publisher(InventoryLoader, CardStore, Protocol):
    pass


class StatusSetter(Publisher, Protocol):
    """The engine client as ending a sale needs it."""

    async def set_status(self, event_id: str, status: EventStatus) -> EventStatus: ...


# ---------------------------------------------------------------- cards
# An event's card: the event as every public read shows it, kept in Redis
# beside its inventory ({ev:<id>}:card) from the moment it is published, and
# written again whenever it changes, so that no public read queries Postgres.
# Drafts have none (only their organizer sees them, from Postgres).


def card_of(event: EventRecord) -> str:
    fields = asdict(event)
    fields["organizer_id"] = str(event.organizer_id) if event.organizer_id else None
    for name in ("starts_at", "created_at", "published_at"):
        value = getattr(event, name)
        fields[name] = value.isoformat() if value else None
    return json.dumps(fields, separators=(",", ":"))


def event_from_card(raw: bytes | str) -> EventRecord:
    fields = json.loads(raw)
    sections = tuple(
        SectionRecord(**{**s, "kind": SectionKind(s["kind"])}) for s in fields.pop("sections")
    )
    for name in ("starts_at", "created_at", "published_at"):
        fields[name] = datetime.fromisoformat(fields[name]) if fields[name] else None
    organizer = fields.pop("organizer_id")
    fields["status"] = EventStatus(fields["status"])
    return EventRecord(
        **fields, organizer_id=uuid.UUID(organizer) if organizer else None, sections=sections
    )


class CardReader(Protocol):
    async def card(self, event_id: str) -> tuple[int, bytes] | None: ...


class Cards:
    """An event lookup for processes without the API's cache (reconciliation):
    the card from Redis, or, for a draft, Postgres."""

    def __init__(self, cards: CardReader, db: AsyncEngine) -> None:
        self._cards, self._db = cards, db

    async def get(self, event_id: str) -> EventRecord | None:
        card = await self._cards.card(event_id)
        if card is not None:
            return event_from_card(card[1])
        return await event_store.get_event(self._db, event_id)


async def write_card(cards: CardStore, event: EventRecord) -> None:
    """Publishes the event's card; a newer write has a higher revision."""
    if event.status is not EventStatus.DRAFT:
        await cards.put_card(event.id, time.time_ns() // 1000, card_of(event))


async def create_event(
    db: AsyncEngine,
    organizer_id: uuid.UUID | None,
    draft: EventDraft,
    sections: Sequence[SectionSpec] = (),
    *,
    event_id: str | None = None,
    max_places: int = MAX_SEATS_PER_EVENT,
) -> EventRecord:
    """A draft event with its sections. The organizer must exist
    (``invalid_token`` otherwise: the caller's account is gone). ``max_places``
    is the API's limit; only tools raise it (the HTTP benchmark's bottomless
    general admission)."""
    try:
        event = await event_store.create_event(db, organizer_id, draft, event_id=event_id)
    except event_store.UnknownOrganizer as exc:
        raise SaleRefused("invalid_token", "the account no longer exists") from exc
    for spec in sections:
        await add_section_to(db, event.id, spec, max_places=max_places)
    if sections:
        found = await event_store.get_event(db, event.id)
        assert found is not None
        event = found
    return event


async def add_section_to(
    db: AsyncEngine, event_id: str, spec: SectionSpec, *, max_places: int = MAX_SEATS_PER_EVENT
) -> SectionRecord:
    try:
        return await event_store.add_section(db, event_id, spec, max_places=max_places)
    except EventConflict as exc:
        raise SaleRefused(exc.code, exc.detail) from exc


async def add_section(
    db: AsyncEngine, event_id: str, spec: SectionSpec, user: Principal
) -> SectionRecord:
    """A section of a draft the caller manages."""
    await managed_event(db, event_id, user)
    return await add_section_to(db, event_id, spec)


async def update_event(
    db: AsyncEngine, cards: CardStore, event_id: str, changes: dict[str, Any], user: Principal
) -> EventRecord:
    """Drafts take every field; an event on sale only its descriptive ones."""
    await managed_event(db, event_id, user)
    try:
        event = await event_store.update_event(db, event_id, changes)
    except EventConflict as exc:
        raise SaleRefused(exc.code, exc.detail) from exc
    await write_card(cards, event)
    return event


async def publish(
    db: AsyncEngine, engine: Publisher, event_id: str, user: Principal
) -> EventRecord:
    """Puts the event on sale: Postgres first, then its inventory and card into Redis."""
    await managed_event(db, event_id, user)
    return await put_on_sale(db, engine, event_id)


async def put_on_sale(db: AsyncEngine, engine: Publisher, event_id: str) -> EventRecord:
    """Publishes (or, for an event already on sale, loads the engine again if
    Redis lost it); for tools and the demo seed, which act as the organizer."""
    try:
        await publish_event(db, engine, event_id)
    except PublishError as exc:
        raise SaleRefused(exc.code, str(exc)) from exc
    event = await event_store.get_event(db, event_id)
    assert event is not None
    await write_card(engine, event)
    return event


async def end_sale(
    db: AsyncEngine, engine: StatusSetter, event_id: str, status: EventStatus, user: Principal
) -> EventRecord:
    """Closes (no new holds; holds already placed may still be bought) or
    cancels (no new holds and no new sales)."""
    await managed_event(db, event_id, user)
    try:
        previous, event = await event_store.end_event(db, event_id, status)
    except EventConflict as exc:
        raise SaleRefused(exc.code, exc.detail) from exc
    if previous in (EventStatus.ON_SALE, EventStatus.CLOSED):  # in Redis: stop the sale there
        try:
            await engine.set_status(event_id, status)
        except EventNotFound:
            pass  # nothing loaded (Redis lost it): a rebuild reads the new status
    await write_card(engine, event)
    return event
