"""The outbox: what the engine appends to an event's stream for Postgres.

Confirming a sale and refunding one each append an entry to the event's
``{ev:<id>}:outbox`` stream in the same script that changes the inventory
(DESIGN rule 7). ``lua/lib.lua`` writes them (``op_confirm``, ``op_refund``);
this module is the one place Python reads them, for the outbox writer and for
the inventory rebuild. Stream fields are flat strings:

``order_confirmed``: ``event_id``, ``order_id``, ``hold_id``, ``customer_id``,
``seats`` (comma-separated seat ids, empty for general admission), ``section``
(the GA section, empty for seats), ``quantity``, ``confirmed_at_ms``, ``meta``
(JSON: ``amount_cents``, ``currency``, ``payment``), and ``late`` = ``1`` when
the payment came after the hold lapsed.

``order_refunded``: ``event_id``, ``order_id``, ``hold_id``, ``seats`` (the
seats freed), ``section``, ``quantity`` (places freed), ``refunded_at_ms``.

``order_placed`` (checkout): ``event_id``, ``order_id``, ``hold_id``,
``customer_id``, ``amount_cents``, ``currency``, ``items`` (JSON, as
``orders.items`` stores them), ``payment_intent``, ``provider``,
``created_at_ms``, ``expires_at_ms``.

``order_ended``: ``event_id``, ``order_id``, ``hold_id``, ``customer_id``,
``status`` (``cancelled`` | ``refunded``), ``reason``, ``ended_at_ms``,
``stripe_event`` (the Stripe event that ended it, if one did).

``payment_updated``: ``event_id``, ``order_id``, ``status``, ``updated_at_ms``.

The writer applies each kind so that any order of arrival ends in the same
rows (several writers may take entries of one stream in different batches).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

# Every event's outbox stream, for the Postgres writer to find. Not an event
# key: only Python touches it, never a script, so it may live in any slot.
OUTBOX_REGISTRY = "onsale:outboxes"


@dataclass(frozen=True)
class OrderConfirmed:
    """A sale the engine made: the order owns these seats or GA places."""

    event_id: str
    order_id: str
    hold_id: str
    customer_id: str
    seats: tuple[str, ...]
    section: str | None
    quantity: int
    confirmed_at_ms: int
    meta: dict[str, Any] = field(default_factory=dict)
    late: bool = False

    @property
    def amount_cents(self) -> int | None:
        amount = self.meta.get("amount_cents")
        return None if amount is None else int(amount)

    @property
    def currency(self) -> str | None:
        currency = self.meta.get("currency")
        return None if currency is None else str(currency)

    @property
    def stripe_event(self) -> str:
        """The Stripe event that paid for it, if one did (a reconciliation has none)."""
        return str(self.meta.get("stripe_event") or "")


@dataclass(frozen=True)
class OrderRefunded:
    """A sale returned to the inventory: these seats or places are free again."""

    event_id: str
    order_id: str
    hold_id: str
    seats: tuple[str, ...]
    section: str | None
    quantity: int
    refunded_at_ms: int


@dataclass(frozen=True)
class OrderPlaced:
    """Checkout: an order awaiting its payment, with the hold it buys."""

    event_id: str
    order_id: str
    hold_id: str
    customer_id: str
    amount_cents: int
    currency: str
    items: list[dict[str, Any]]
    payment_intent: str
    provider: str
    created_at_ms: int
    expires_at_ms: int


@dataclass(frozen=True)
class OrderEnded:
    """An order that will never be paid for its seats."""

    event_id: str
    order_id: str
    hold_id: str
    customer_id: str
    status: str  # cancelled | refunded
    reason: str
    ended_at_ms: int
    stripe_event: str


@dataclass(frozen=True)
class PaymentUpdated:
    event_id: str
    order_id: str
    status: str
    updated_at_ms: int


OutboxEntry = OrderConfirmed | OrderRefunded | OrderPlaced | OrderEnded | PaymentUpdated


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _seats(raw: str) -> tuple[str, ...]:
    return tuple(raw.split(",")) if raw else ()


def parse_entry(raw: Mapping[Any, Any]) -> OutboxEntry | None:
    """The entry a stream record holds; None for a type this version does not
    know (left for a newer reader, never misread). Keys and values may be bytes
    (a client without ``decode_responses``) or text."""
    fields = {_text(k): _text(v) for k, v in raw.items()}
    kind = fields.get("type")
    if kind == "order_confirmed":
        return OrderConfirmed(
            event_id=fields["event_id"],
            order_id=fields["order_id"],
            hold_id=fields["hold_id"],
            customer_id=fields["customer_id"],
            seats=_seats(fields["seats"]),
            section=fields.get("section") or None,
            quantity=int(fields["quantity"]),
            confirmed_at_ms=int(fields["confirmed_at_ms"]),
            meta=json.loads(fields["meta"]) if fields.get("meta") else {},
            late=fields.get("late") == "1",
        )
    if kind == "order_refunded":
        return OrderRefunded(
            event_id=fields.get("event_id", ""),
            order_id=fields["order_id"],
            hold_id=fields.get("hold_id", ""),
            seats=_seats(fields.get("seats", "")),
            section=fields.get("section") or None,
            quantity=int(fields.get("quantity") or 0),
            refunded_at_ms=int(fields.get("refunded_at_ms") or 0),
        )
    if kind == "order_placed":
        return OrderPlaced(
            event_id=fields["event_id"],
            order_id=fields["order_id"],
            hold_id=fields["hold_id"],
            customer_id=fields["customer_id"],
            amount_cents=int(fields["amount_cents"]),
            currency=fields.get("currency", ""),
            items=list(json.loads(fields.get("items") or "[]")),
            payment_intent=fields.get("payment_intent", ""),
            provider=fields.get("provider", ""),
            created_at_ms=int(fields["created_at_ms"]),
            expires_at_ms=int(fields["expires_at_ms"]),
        )
    if kind == "order_ended":
        return OrderEnded(
            event_id=fields["event_id"],
            order_id=fields["order_id"],
            hold_id=fields.get("hold_id", ""),
            customer_id=fields.get("customer_id", ""),
            status=fields["status"],
            reason=fields.get("reason", ""),
            ended_at_ms=int(fields["ended_at_ms"]),
            stripe_event=fields.get("stripe_event", ""),
        )
    if kind == "payment_updated":
        return PaymentUpdated(
            event_id=fields.get("event_id", ""),
            order_id=fields["order_id"],
            status=fields["status"],
            updated_at_ms=int(fields["updated_at_ms"]),
        )
    return None
