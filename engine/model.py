"""Commands the engine accepts and the outcomes it returns.

Plain dataclasses and the standard library only: this is the vocabulary the
actor, the client, the API and the tests share. Commands are imperative
(``HoldSeats``), outcomes describe what happened (``HoldPlaced``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Literal

from engine.errors import EngineError, error_from_code

# ---------------------------------------------------------------- vocabulary
# The words the engine and everything around it share (the Lua scripts use the
# same strings). ``sales.vocabulary`` adds the words the engine has no use for.


class EventStatus(StrEnum):
    """An event's lifecycle; only the last three are ever loaded into Redis."""

    DRAFT = "draft"
    ON_SALE = "on_sale"
    CLOSED = "closed"
    CANCELLED = "cancelled"


class SectionKind(StrEnum):
    SEATED = "seated"  # held seat by seat
    GENERAL = "general"  # general admission, held by quantity


class HoldStatus(StrEnum):
    """A hold's record in Redis (lib.lua's ``st``). A held hold whose time is
    up reads ``expired`` before any sweep has made that visible."""

    HELD = "held"
    RELEASED = "released"
    EXPIRED = "expired"
    CONFIRMED = "confirmed"
    REFUNDED = "refunded"
    REFUSED = "refused"  # no hold: a remembered refusal, for a retry's answer


class SeatStatus(StrEnum):
    """A seat on the map; Redis stores only the taken ones."""

    AVAILABLE = "available"
    HELD = "held"
    SOLD = "sold"


# ---------------------------------------------------------------- seat ids
# "<section>-<row>-<seat>", rows and seats from 1 (DESIGN.md, "Seat ids"). The
# Lua scripts keep their own copy of this rule: ``section_of`` in lua/lib.lua
# and the seat loop of lua/load_inventory.lua.

SEAT_ID = re.compile(r"^(?P<section>[A-Za-z0-9_]+)-(?P<row>[1-9][0-9]*)-(?P<seat>[1-9][0-9]*)$")


def seat_id(section: str, row: int, seat: int) -> str:
    return f"{section}-{row}-{seat}"


def section_of(seat: str) -> str:
    """The section code of a seat id; ValueError if it is not one."""
    match = SEAT_ID.match(seat)
    if match is None:
        raise ValueError(f"not a seat id: {seat!r}")
    return match["section"]


def seat_ids(section: str, rows: int, seats_per_row: int) -> list[str]:
    """Every seat of a seated section, row by row."""
    return [
        seat_id(section, row, seat)
        for row in range(1, rows + 1)
        for seat in range(1, seats_per_row + 1)
    ]


@dataclass(frozen=True)
class SeatedSection:
    code: str
    rows: int
    seats_per_row: int
    kind: Literal[SectionKind.SEATED] = SectionKind.SEATED

    @property
    def capacity(self) -> int:
        return self.rows * self.seats_per_row

    def seat_ids(self) -> list[str]:
        return seat_ids(self.code, self.rows, self.seats_per_row)

    def to_wire(self) -> dict[str, Any]:
        return {
            "code": self.code,
            "kind": self.kind,
            "rows": self.rows,
            "seats_per_row": self.seats_per_row,
        }


@dataclass(frozen=True)
class GeneralSection:
    code: str
    capacity: int
    kind: Literal[SectionKind.GENERAL] = SectionKind.GENERAL

    def to_wire(self) -> dict[str, Any]:
        return {"code": self.code, "kind": self.kind, "capacity": self.capacity}


Section = SeatedSection | GeneralSection


# ---------------------------------------------------------------- commands


@dataclass(frozen=True)
class QueuePass:
    """An admission from the event's waiting room, as its signed pass names it."""

    nonce: str
    issued_at_ms: int
    expires_at_ms: int


def _queue_wire(wire: dict[str, Any], queue_pass: QueuePass | None, exempt: bool) -> None:
    if queue_pass is not None:
        wire["qp"] = queue_pass.nonce
        wire["qi"] = queue_pass.issued_at_ms
        wire["qe"] = queue_pass.expires_at_ms
    if exempt:
        wire["qx"] = True


@dataclass(frozen=True)
class HoldSeats:
    hold_id: str
    customer_id: str
    seats: tuple[str, ...]
    ttl_ms: int
    fingerprint: str = ""  # of the request, when it came with an Idempotency-Key
    queue_pass: QueuePass | None = None  # needed while the waiting room is on
    queue_exempt: bool = False  # a hold the engine makes itself for someone

    def to_wire(self) -> dict[str, Any]:
        wire: dict[str, Any] = {
            "op": "hold",
            "hold_id": self.hold_id,
            "customer_id": self.customer_id,
            "seats": list(self.seats),
            "ttl_ms": self.ttl_ms,
        }
        if self.fingerprint:
            wire["fp"] = self.fingerprint
        _queue_wire(wire, self.queue_pass, self.queue_exempt)
        return wire


@dataclass(frozen=True)
class HoldQuantity:
    hold_id: str
    customer_id: str
    section: str
    quantity: int
    ttl_ms: int
    fingerprint: str = ""
    queue_pass: QueuePass | None = None
    queue_exempt: bool = False

    def to_wire(self) -> dict[str, Any]:
        wire: dict[str, Any] = {
            "op": "hold",
            "hold_id": self.hold_id,
            "customer_id": self.customer_id,
            "section": self.section,
            "quantity": self.quantity,
            "ttl_ms": self.ttl_ms,
        }
        if self.fingerprint:
            wire["fp"] = self.fingerprint
        _queue_wire(wire, self.queue_pass, self.queue_exempt)
        return wire


@dataclass(frozen=True)
class ReleaseHold:
    hold_id: str
    customer_id: str = ""  # empty: no ownership check (operators, tooling)

    def to_wire(self) -> dict[str, Any]:
        return {"op": "release", "hold_id": self.hold_id, "customer_id": self.customer_id}


@dataclass(frozen=True)
class ConfirmHold:
    """Sells a hold to an order. ``late``: the payment came after the hold
    lapsed; sell the same seats (or GA places) to the order if they are free
    now. ``customer_id``, ``seats`` or ``section`` + ``quantity`` are the
    order's own copy, used only if Redis has forgotten the hold's record; they
    are sent only when ``late``."""

    hold_id: str
    order_id: str
    meta: dict[str, Any] = field(default_factory=dict)
    late: bool = False
    seats: tuple[str, ...] | None = None
    section: str | None = None
    quantity: int = 0
    customer_id: str = ""

    def to_wire(self) -> dict[str, Any]:
        wire: dict[str, Any] = {
            "op": "confirm",
            "hold_id": self.hold_id,
            "order_id": self.order_id,
            "meta": self.meta,
        }
        if self.late:
            wire.update(late=True, customer_id=self.customer_id, quantity=self.quantity)
            if self.seats:
                wire["seats"] = list(self.seats)
            if self.section:
                wire["section"] = self.section
        return wire


@dataclass(frozen=True)
class ExtendHold:
    """Keeps a live hold until ``until_ms`` (later only): the payment window."""

    hold_id: str
    customer_id: str
    until_ms: int

    def to_wire(self) -> dict[str, Any]:
        return {
            "op": "extend",
            "hold_id": self.hold_id,
            "customer_id": self.customer_id,
            "until_ms": self.until_ms,
        }


@dataclass(frozen=True)
class RefundSale:
    """Returns an order's seats or GA places to sale, once per order.

    The hold's record (while Redis keeps it) says what was sold; otherwise the
    seats still sold to ``order_id`` do, and for general admission the caller's
    word: ``sold_confirmed`` (the API refunds only orders Postgres has paid).
    Without it, a GA refund with no record fails ``order_not_sold``."""

    order_id: str
    hold_id: str
    seats: tuple[str, ...] | None = None
    section: str | None = None
    quantity: int = 0
    sold_confirmed: bool = True

    def to_wire(self) -> dict[str, Any]:
        wire: dict[str, Any] = {
            "op": "refund",
            "order_id": self.order_id,
            "hold_id": self.hold_id,
            "quantity": self.quantity,
            "sold_confirmed": self.sold_confirmed,
        }
        if self.seats:
            wire["seats"] = list(self.seats)
        if self.section:
            wire["section"] = self.section
        return wire


@dataclass(frozen=True)
class PlaceOrder:
    """The order of a live hold (one per hold), kept in the hold's record and
    appended to the outbox; the hold is kept until ``until_ms`` (the payment
    window). ``items`` are the order's items as Postgres stores them."""

    hold_id: str
    customer_id: str
    order_id: str
    until_ms: int
    amount_cents: int
    currency: str
    items: tuple[dict[str, Any], ...]
    payment_intent: str = ""
    provider: str = ""

    def to_wire(self) -> dict[str, Any]:
        return {
            "op": "order",
            "hold_id": self.hold_id,
            "customer_id": self.customer_id,
            "order_id": self.order_id,
            "until_ms": self.until_ms,
            "amount_cents": self.amount_cents,
            "currency": self.currency,
            "items": list(self.items),
            "payment_intent": self.payment_intent,
            "provider": self.provider,
        }


@dataclass(frozen=True)
class EndOrder:
    """An order that will never be paid for its seats: ``cancelled`` (its
    payment was), or ``refunded`` (the money went back: its seats were resold,
    or its event cancelled). The hold is let go. Once per order."""

    hold_id: str
    order_id: str
    status: str  # cancelled | refunded
    reason: str
    stripe_event: str = ""

    def to_wire(self) -> dict[str, Any]:
        return {
            "op": "end",
            "hold_id": self.hold_id,
            "order_id": self.order_id,
            "status": self.status,
            "reason": self.reason,
            "stripe_event": self.stripe_event,
        }


@dataclass(frozen=True)
class NotePayment:
    """The status of an order's payment (e.g. ``failed``: another card may be tried)."""

    hold_id: str
    order_id: str
    status: str

    def to_wire(self) -> dict[str, Any]:
        return {"op": "payment", "hold_id": self.hold_id, "order_id": self.order_id,
                "status": self.status}  # fmt: skip


Command = (
    HoldSeats
    | HoldQuantity
    | ReleaseHold
    | ConfirmHold
    | ExtendHold
    | RefundSale
    | PlaceOrder
    | EndOrder
    | NotePayment
)


# ---------------------------------------------------------------- outcomes


@dataclass(frozen=True)
class HoldPlaced:
    hold_id: str
    customer_id: str
    quantity: int
    expires_at_ms: int
    seats: tuple[str, ...] | None
    section: str | None
    status: HoldStatus
    replayed: bool


@dataclass(frozen=True)
class HoldReleased:
    hold_id: str
    released: bool
    status: HoldStatus


@dataclass(frozen=True)
class SaleConfirmed:
    hold_id: str
    order_id: str
    replayed: bool


@dataclass(frozen=True)
class SaleRefunded:
    order_id: str
    replayed: bool


@dataclass(frozen=True)
class OrderRecorded:
    order_id: str
    hold_id: str
    created_at_ms: int
    expires_at_ms: int


@dataclass(frozen=True)
class OrderFinished:
    order_id: str
    replayed: bool


@dataclass(frozen=True)
class PaymentRecorded:
    order_id: str


Outcome = (
    HoldPlaced
    | HoldReleased
    | SaleConfirmed
    | SaleRefunded
    | OrderRecorded
    | OrderFinished
    | PaymentRecorded
)


def outcome_from_wire(command: Command, raw: dict[str, Any]) -> Outcome | EngineError:
    """Turns one script result into an outcome, or the engine error it names."""
    if not raw.get("ok"):
        context = {k: v for k, v in raw.items() if k not in ("ok", "code")}
        return error_from_code(str(raw.get("code")), **context)
    if isinstance(command, RefundSale):
        return SaleRefunded(order_id=raw["order_id"], replayed=bool(raw["replayed"]))
    if isinstance(command, PlaceOrder):
        return OrderRecorded(
            order_id=raw["order_id"],
            hold_id=raw["hold_id"],
            created_at_ms=int(raw["created_at_ms"]),
            expires_at_ms=int(raw["expires_at_ms"]),
        )
    if isinstance(command, EndOrder):
        return OrderFinished(order_id=raw["order_id"], replayed=bool(raw["replayed"]))
    if isinstance(command, NotePayment):
        return PaymentRecorded(order_id=raw["order_id"])
    if isinstance(command, HoldSeats | HoldQuantity | ExtendHold):
        seats = raw.get("seats")
        return HoldPlaced(
            hold_id=raw["hold_id"],
            customer_id=raw["customer_id"],
            quantity=int(raw["quantity"]),
            expires_at_ms=int(raw["expires_at_ms"]),
            seats=tuple(seats) if seats else None,
            section=raw.get("section"),
            status=HoldStatus(raw["status"]),
            replayed=bool(raw["replayed"]),
        )
    if isinstance(command, ReleaseHold):
        return HoldReleased(
            hold_id=raw["hold_id"],
            released=bool(raw["released"]),
            status=HoldStatus(raw["status"]),
        )
    return SaleConfirmed(
        hold_id=raw["hold_id"], order_id=raw["order_id"], replayed=bool(raw["replayed"])
    )


@dataclass(frozen=True)
class PlacedOrder:
    """The order placed on a hold, as the hold's record keeps it."""

    order_id: str
    amount_cents: int
    currency: str
    items: tuple[dict[str, Any], ...]
    payment_intent: str
    provider: str
    created_at_ms: int
    payment_status: str  # pending | failed | succeeded | canceled
    ended: tuple[str, str, int] | None  # (cancelled | refunded, reason, at ms)

    @classmethod
    def from_record(cls, raw: dict[str, Any]) -> PlacedOrder:
        fin = raw.get("fin")
        items = raw.get("items")
        return cls(
            order_id=raw["id"],
            amount_cents=int(raw["amt"]),
            currency=raw.get("cur") or "",
            items=tuple(items) if isinstance(items, list) else (),
            payment_intent=raw.get("pi") or "",
            provider=raw.get("prov") or "",
            created_at_ms=int(raw["at"]),
            payment_status=raw.get("pay") or "pending",
            ended=(fin["st"], fin.get("why") or "", int(fin["at"])) if fin else None,
        )


@dataclass(frozen=True)
class HoldView:
    """A hold as Redis has it now; ``status`` is ``expired`` once its time is
    up, whether or not a sweep has made that visible yet."""

    hold_id: str
    customer_id: str
    quantity: int
    expires_at_ms: int
    seats: tuple[str, ...] | None
    section: str | None
    status: HoldStatus
    order_id: str | None  # the order the hold was sold to
    order: PlacedOrder | None = None  # the order placed on it (checkout), if any
    sold_at_ms: int | None = None
    refunded_at_ms: int | None = None

    @classmethod
    def from_record(cls, hold_id: str, rec: dict[str, Any], now_ms: int) -> HoldView:
        status = HoldStatus(rec["st"])
        if status is HoldStatus.HELD and int(rec["e"]) <= now_ms:
            status = HoldStatus.EXPIRED
        seats = rec.get("seats")
        return cls(
            hold_id=hold_id,
            customer_id=rec["c"],
            quantity=int(rec["q"]),
            expires_at_ms=int(rec["e"]),
            seats=tuple(seats) if isinstance(seats, list) and seats else None,
            section=rec.get("sec"),
            status=status,
            order_id=rec.get("o"),
            order=PlacedOrder.from_record(rec["ord"]) if isinstance(rec.get("ord"), dict) else None,
            sold_at_ms=int(rec["ca"]) if rec.get("ca") else None,
            refunded_at_ms=int(rec["ra"]) if rec.get("ra") else None,
        )


@dataclass(frozen=True)
class SectionAvailability:
    code: str
    kind: SectionKind
    capacity: int
    available: int
    held: int
    sold: int


@dataclass(frozen=True)
class Snapshot:
    version: int
    status: EventStatus
    max_per_customer: int
    sections: tuple[SectionAvailability, ...]
    seats: dict[str, str]  # seat id -> SeatStatus "held" | "sold"; absent means available

    def section(self, code: str) -> SectionAvailability:
        for s in self.sections:
            if s.code == code:
                return s
        raise KeyError(code)


def raise_for(outcome: Outcome | EngineError) -> Outcome:
    if isinstance(outcome, EngineError):
        raise outcome
    return outcome
