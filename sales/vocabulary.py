"""One vocabulary for every layer: tables (CHECK constraints), records,
request and response schemas, services and the engine.

StrEnums, so each member is its own string: it compares equal to, is stored
and is serialized as the word the contract (docs/API.md) uses. The words the
engine needs live in :mod:`engine.model` and are re-exported here, so that
the rest of onsale finds every status in one place.
"""

from __future__ import annotations

from enum import StrEnum

from engine.model import EventStatus, HoldStatus, SeatStatus, SectionKind

__all__ = [
    "ApplicationStatus",
    "EventStatus",
    "HoldStatus",
    "OrderStatus",
    "PaymentStatus",
    "Role",
    "SeatStatus",
    "SectionKind",
    "TicketStatus",
    "sql_in",
]


class Role(StrEnum):
    CUSTOMER = "customer"  # buys
    ORGANIZER = "organizer"  # creates and runs events
    ADMIN = "admin"  # acts on any event and account


class ApplicationStatus(StrEnum):
    """A customer's application to become an organizer."""

    PENDING = "pending"
    APPROVED = "approved"
    REJECTED = "rejected"


class OrderStatus(StrEnum):
    """``pending_payment`` → ``paid`` → ``refunded``; or ``pending_payment`` →
    ``expired`` | ``cancelled`` (or ``refunded`` when a payment came for seats
    that were resold). ``expired`` is shown, never stored: a pending order
    whose hold has lapsed."""

    PENDING_PAYMENT = "pending_payment"
    PAID = "paid"
    REFUNDED = "refunded"
    EXPIRED = "expired"
    CANCELLED = "cancelled"


class TicketStatus(StrEnum):
    VALID = "valid"
    REFUNDED = "refunded"  # revoked: refused at the door, no token, no QR code


class PaymentStatus(StrEnum):
    """onsale's record of a payment; Stripe's webhooks move it on."""

    PENDING = "pending"  # created, waiting for the buyer's card
    SUCCEEDED = "succeeded"
    FAILED = "failed"  # a card was declined; another may be tried
    CANCELED = "canceled"


def sql_in(column: str, vocabulary: type[StrEnum]) -> str:
    """A CHECK constraint's condition: ``column`` holds one of the words."""
    return f"{column} IN ({', '.join(repr(str(m)) for m in vocabulary)})"
