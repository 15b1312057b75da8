"""Who may see and manage what: one rule each for events, orders and tickets.

Someone else's order, hold or ticket, and someone else's draft, does not exist
for the caller (``not_found``, never ``forbidden``, so ids cannot be probed);
an event the caller can see but not manage is ``forbidden``.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncEngine

from persistence import events as event_store
from persistence.events import EventRecord
from sales.errors import SaleRefused
from sales.vocabulary import EventStatus, Role


@dataclass(frozen=True)
class Principal:
    """Who is calling, as their access token says."""

    user_id: uuid.UUID
    role: Role

    @property
    def customer_id(self) -> str:
        """The id the engine knows this user by (holds, per-customer limits)."""
        return self.user_id.hex


def owns_as_organizer(organizer_id: uuid.UUID | None, user: Principal) -> bool:
    """The event's organizer, while an organizer: someone demoted keeps their
    events' ownership in the records but none of its powers."""
    return user.role is Role.ORGANIZER and organizer_id is not None and organizer_id == user.user_id


def may_manage(event: EventRecord, user: Principal | None) -> bool:
    """The event's organizer, and admins."""
    return user is not None and (
        user.role is Role.ADMIN or owns_as_organizer(event.organizer_id, user)
    )


def may_see_event(event: EventRecord, user: Principal | None) -> bool:
    """Everyone, but a draft only those who manage it."""
    return event.status is not EventStatus.DRAFT or may_manage(event, user)


def may_see_sale(customer_id: str, organizer_id: uuid.UUID | None, user: Principal) -> bool:
    """An order and its tickets: to the buyer, the event's organizer, admins."""
    return (
        user.role is Role.ADMIN
        or customer_id == user.customer_id
        or owns_as_organizer(organizer_id, user)
    )


async def visible_event(db: AsyncEngine, event_id: str, user: Principal | None) -> EventRecord:
    """The event if this caller may see it; ``not_found`` otherwise."""
    event = await event_store.get_event(db, event_id)
    if event is None or not may_see_event(event, user):
        raise SaleRefused("not_found", "no such event")
    return event


async def managed_event(db: AsyncEngine, event_id: str, user: Principal) -> EventRecord:
    """The event if this caller manages it; ``forbidden`` if they may only see it."""
    event = await visible_event(db, event_id, user)
    if not may_manage(event, user):
        raise SaleRefused("forbidden", "only the event's organizer or an admin may do this")
    return event
