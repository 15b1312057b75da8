"""Events and their sections as the API reads and edits them (control plane:
written to Postgres synchronously; publishing is in :mod:`persistence.catalog`)."""

from __future__ import annotations

import uuid
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import func, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from persistence.models import Event, Section
from sales.vocabulary import EventStatus, SectionKind

MAX_SEATS_PER_EVENT = 200_000


# Tickets one customer may hold and buy per event when the organizer says
# nothing: one account cannot hold a venue (0, "no limit", must be asked for).
DEFAULT_MAX_TICKETS_PER_CUSTOMER = 8
# Places one customer may hold at once when the organizer says nothing: what
# still protects an event whose organizer chose no limit (0: no cap, asked for).
DEFAULT_MAX_HELD_PER_CUSTOMER = 10


@dataclass(frozen=True)
class EventDraft:
    """What an organizer says about a new event (sections come one by one)."""

    name: str
    venue: str
    starts_at: datetime
    currency: str
    description: str | None = None
    hold_ttl_s: int = 600
    # 0: no limit, only ever an explicit choice; left out, a protective cap
    max_tickets_per_customer: int = DEFAULT_MAX_TICKETS_PER_CUSTOMER
    max_held_per_customer: int = DEFAULT_MAX_HELD_PER_CUSTOMER


@dataclass(frozen=True)
class SectionSpec:
    """A section to add: seated (rows by seats_per_row) or general (capacity)."""

    code: str
    name: str
    price_cents: int
    kind: SectionKind
    rows: int | None = None
    seats_per_row: int | None = None
    capacity: int | None = None

    @property
    def places(self) -> int:
        if self.kind is SectionKind.SEATED:
            return (self.rows or 0) * (self.seats_per_row or 0)
        return self.capacity or 0


@dataclass(frozen=True)
class SectionRecord:
    code: str
    name: str
    kind: SectionKind
    price_cents: int
    capacity: int
    rows: int | None
    seats_per_row: int | None


@dataclass(frozen=True)
class EventRecord:
    id: str
    organizer_id: uuid.UUID | None
    name: str
    venue: str
    description: str | None
    starts_at: datetime
    currency: str
    status: EventStatus
    hold_ttl_s: int
    max_tickets_per_customer: int
    created_at: datetime
    published_at: datetime | None
    max_held_per_customer: int = 0  # places held at once (0: no cap)
    sections: tuple[SectionRecord, ...] = field(default=())

    def section(self, code: str) -> SectionRecord | None:
        return next((s for s in self.sections if s.code == code), None)


class EventConflict(Exception):
    def __init__(self, code: str, detail: str | None = None) -> None:
        super().__init__(detail or code)
        self.code = code
        self.detail = detail


_EVENT_COLUMNS = [c for c in Event.__table__.c]


def _event(row: Any, sections: tuple[SectionRecord, ...] = ()) -> EventRecord:
    fields = {c.name: getattr(row, c.name) for c in _EVENT_COLUMNS}
    fields["status"] = EventStatus(fields["status"])
    return EventRecord(**fields, sections=sections)


def _section(row: Any) -> SectionRecord:
    return SectionRecord(
        row.code,
        row.name,
        SectionKind(row.kind),
        row.price_cents,
        row.capacity,
        row.rows,
        row.seats_per_row,
    )


def new_event_id() -> str:
    return "ev_" + uuid.uuid4().hex[:16]


class UnknownOrganizer(Exception):
    """The token names a user Postgres does not have (deleted since)."""


async def create_event(
    db: AsyncEngine,
    organizer_id: uuid.UUID | None,
    draft: EventDraft,
    *,
    event_id: str | None = None,
) -> EventRecord:
    """A draft with no sections yet; ``event_id`` for a chosen id (the demo)."""
    try:
        async with db.begin() as conn:
            row = (
                await conn.execute(
                    insert(Event)
                    .values(
                        id=event_id or new_event_id(),
                        organizer_id=organizer_id,
                        status=EventStatus.DRAFT,
                        **asdict(draft),
                    )
                    .returning(*_EVENT_COLUMNS)
                )
            ).one()
    except IntegrityError as exc:  # events.organizer_id -> users.id
        raise UnknownOrganizer(str(organizer_id)) from exc
    return _event(row)


async def get_event(db: AsyncEngine, event_id: str) -> EventRecord | None:
    async with db.connect() as conn:
        row = (await conn.execute(select(Event).where(Event.id == event_id))).one_or_none()
        if row is None:
            return None
        sections = (
            await conn.execute(
                select(Section).where(Section.event_id == event_id).order_by(Section.code)
            )
        ).all()
    return _event(row, tuple(_section(s) for s in sections))


DESCRIPTIVE = frozenset({"name", "venue", "description"})


async def update_event(db: AsyncEngine, event_id: str, changes: dict[str, Any]) -> EventRecord:
    """Drafts take every field; an event on sale only its descriptive ones."""
    async with db.begin() as conn:
        status = (
            await conn.execute(select(Event.status).where(Event.id == event_id).with_for_update())
        ).scalar_one()
        if status in (EventStatus.CLOSED, EventStatus.CANCELLED):
            raise EventConflict("event_ended")
        if status == EventStatus.ON_SALE and set(changes) - DESCRIPTIVE:
            fields = ", ".join(sorted(set(changes) - DESCRIPTIVE))
            raise EventConflict("event_not_draft", f"on sale: {fields} can no longer change")
        if changes:
            await conn.execute(update(Event).where(Event.id == event_id).values(**changes))
    event = await get_event(db, event_id)
    assert event is not None
    return event


async def add_section(
    db: AsyncEngine, event_id: str, spec: SectionSpec, *, max_places: int = MAX_SEATS_PER_EVENT
) -> SectionRecord:
    """A section of a draft, if the event stays within ``max_places``."""
    capacity = spec.places
    try:
        async with db.begin() as conn:
            status = (
                await conn.execute(
                    select(Event.status).where(Event.id == event_id).with_for_update()
                )
            ).scalar_one()
            if status != EventStatus.DRAFT:
                raise EventConflict("event_not_draft", f"the event is {status}")
            seats_so_far = (
                await conn.execute(
                    select(func.coalesce(func.sum(Section.capacity), 0)).where(
                        Section.event_id == event_id
                    )
                )
            ).scalar_one()
            if seats_so_far + capacity > max_places:
                raise EventConflict("event_too_large", f"at most {max_places:,} places per event")
            row = (
                await conn.execute(
                    insert(Section)
                    .values(
                        event_id=event_id,
                        code=spec.code,
                        name=spec.name,
                        kind=str(spec.kind),
                        price_cents=spec.price_cents,
                        rows=spec.rows,
                        seats_per_row=spec.seats_per_row,
                        capacity=capacity,
                    )
                    .returning(*Section.__table__.c)
                )
            ).one()
    except IntegrityError as exc:  # (event_id, code) is unique
        raise EventConflict("section_exists", f"section {spec.code} exists") from exc
    return _section(row)


_TRANSITIONS = {
    EventStatus.CLOSED: (EventStatus.ON_SALE,),
    EventStatus.CANCELLED: (EventStatus.DRAFT, EventStatus.ON_SALE, EventStatus.CLOSED),
}


async def end_event(
    db: AsyncEngine, event_id: str, status: EventStatus
) -> tuple[EventStatus, EventRecord]:
    """Closes or cancels; returns the previous status and the event."""
    async with db.begin() as conn:
        previous = EventStatus(
            (
                await conn.execute(
                    select(Event.status).where(Event.id == event_id).with_for_update()
                )
            ).scalar_one()
        )
        if previous != status:
            if previous not in _TRANSITIONS[status]:
                raise EventConflict("invalid_state", f"a {previous} event cannot be {status}")
            await conn.execute(update(Event).where(Event.id == event_id).values(status=status))
    event = await get_event(db, event_id)
    assert event is not None
    return previous, event


async def list_on_sale(db: AsyncEngine, page: int, size: int) -> tuple[list[EventRecord], int]:
    """On-sale events, newest first, with their sections."""
    async with db.connect() as conn:
        total = (
            await conn.execute(select(func.count()).where(Event.status == EventStatus.ON_SALE))
        ).scalar_one()
        rows = (
            await conn.execute(
                select(Event)
                .where(Event.status == EventStatus.ON_SALE)
                .order_by(Event.published_at.desc(), Event.id)
                .offset((page - 1) * size)
                .limit(size)
            )
        ).all()
        ids = [r.id for r in rows]
        sections = (
            await conn.execute(
                select(Section).where(Section.event_id.in_(ids)).order_by(Section.code)
            )
        ).all()
    by_event: dict[str, list[SectionRecord]] = {}
    for s in sections:
        by_event.setdefault(s.event_id, []).append(_section(s))
    return [_event(r, tuple(by_event.get(r.id, ()))) for r in rows], total


async def event_status(db: AsyncEngine, event_id: str) -> EventStatus | None:
    """The event's status now, or None if there is no such event."""
    async with db.connect() as conn:
        status = (
            await conn.execute(select(Event.status).where(Event.id == event_id))
        ).scalar_one_or_none()
    return None if status is None else EventStatus(status)
