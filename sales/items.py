"""What an order buys: its items, and the places they take in the inventory.

An order has one item per seat, or one item for its general-admission places
(a section and a quantity), each with the price it was sold at. Postgres keeps
them as JSON on the order (``orders.items``); the engine knows the same sale
as seats, or a section and a quantity (:class:`Places`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class OrderItem:
    section: str
    quantity: int  # 1 for a seat
    price_cents: int  # each
    seat: str | None = None  # None: general admission

    @property
    def amount_cents(self) -> int:
        return self.price_cents * self.quantity

    def to_json(self) -> dict[str, Any]:
        """As ``orders.items`` stores it (and as the API shows it)."""
        item: dict[str, Any] = {}
        if self.seat is not None:
            item["seat"] = self.seat
        item.update(section=self.section, quantity=self.quantity, price_cents=self.price_cents)
        return item

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> OrderItem:
        return cls(
            section=str(raw["section"]),
            quantity=int(raw["quantity"]),
            price_cents=int(raw["price_cents"]),
            seat=raw.get("seat"),
        )


def items_from_json(raw: Iterable[dict[str, Any]] | None) -> tuple[OrderItem, ...]:
    return tuple(OrderItem.from_json(item) for item in raw or ())


def items_to_json(items: Iterable[OrderItem]) -> list[dict[str, Any]]:
    return [item.to_json() for item in items]


def amount_of(items: Iterable[OrderItem]) -> int:
    return sum(item.amount_cents for item in items)


@dataclass(frozen=True)
class Places:
    """An order's places as the engine takes them: ``seats``, or ``section``
    and ``quantity`` (general admission). A late sale or a refund names them
    when Redis no longer remembers the hold."""

    seats: tuple[str, ...] | None
    section: str | None
    quantity: int

    @classmethod
    def of(cls, items: Sequence[OrderItem]) -> Places:
        seats = tuple(i.seat for i in items if i.seat is not None)
        general = next((i for i in items if i.seat is None), None)
        return cls(
            seats=seats or None,
            section=general.section if general else None,
            quantity=general.quantity if general else len(seats),
        )
