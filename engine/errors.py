"""Engine errors: one hierarchy, one stable ``code`` per failure.

The API maps these to problem+json in one place; load tests and clients key
on ``code``, so codes never change once published.
"""

from __future__ import annotations

from typing import Any, ClassVar


class EngineError(Exception):
    """A request the engine refused or could not finish."""

    code: ClassVar[str] = "engine_error"
    title: ClassVar[str] = "The engine could not complete the request"

    def __init__(self, detail: str | None = None, **context: Any) -> None:
        super().__init__(detail or self.title)
        self.detail = detail or self.title
        self.context = context


class EventNotFound(EngineError):
    code = "event_not_found"
    title = "The event has no inventory on sale"


class EventNotOnSale(EngineError):
    code = "event_not_on_sale"
    title = "The event is not on sale"


class SeatsUnavailable(EngineError):
    code = "seats_unavailable"
    title = "Some of the seats are held or sold"


class SoldOut(EngineError):
    code = "sold_out"
    title = "Not enough tickets left in this section"


class CustomerLimit(EngineError):
    code = "customer_limit"
    title = "This would exceed the tickets allowed per customer"


class QueuePassRequired(EngineError):
    code = "queue_pass_required"
    title = "The event's waiting room is on: a hold needs the buyer's pass"


class QueuePassInvalid(EngineError):
    code = "queue_pass_invalid"
    title = "The pass is not the buyer's admission, or it has expired"


class QueueOff(EngineError):
    code = "queue_off"
    title = "The event's waiting room is off"


class HoldExpired(EngineError):
    code = "hold_expired"
    title = "The hold has expired or was released"


class HoldNotFound(EngineError):
    code = "hold_not_found"
    title = "No such hold"


class HoldIdConflict(EngineError):
    code = "hold_id_conflict"
    title = "That hold id belongs to another customer"


class AlreadyConfirmed(EngineError):
    code = "already_confirmed"
    title = "The hold was already confirmed as another order"


class IdempotencyKeyReused(EngineError):
    code = "idempotency_key_reused"
    title = "This Idempotency-Key was used for a different request"


class OrderExists(EngineError):
    code = "order_exists"
    title = "An order for this hold exists"


class InvalidRequest(EngineError):
    code = "invalid_request"
    title = "The request is malformed"


class UnknownSeat(InvalidRequest):
    code = "unknown_seat"
    title = "Some of the seats do not exist"


class DuplicateSeat(InvalidRequest):
    code = "duplicate_seat"
    title = "A seat appears more than once in the request"


class UnknownSection(InvalidRequest):
    code = "unknown_section"
    title = "No such section"


class WrongSectionKind(InvalidRequest):
    code = "wrong_section_kind"
    title = "Seated sections are held by seat, general admission by quantity"


class InvalidQuantity(InvalidRequest):
    code = "invalid_quantity"
    title = "Quantity must be a whole number of at least 1"


class InvalidInventory(InvalidRequest):
    code = "invalid_inventory"
    title = "The seat map is not valid"


class OrderNotSold(EngineError):
    code = "order_not_sold"
    title = "The engine has no sale for this order"


class EngineTimeout(EngineError):
    code = "engine_timeout"
    title = "The engine did not answer in time; retry with the same id"


class EngineUnavailable(EngineError):
    code = "engine_unavailable"
    title = "The engine is not reachable"


_BY_CODE: dict[str, type[EngineError]] = {}


def _register(cls: type[EngineError]) -> None:
    _BY_CODE[cls.code] = cls
    for sub in cls.__subclasses__():
        _register(sub)


_register(EngineError)


def error_from_code(code: str, **context: Any) -> EngineError:
    """The engine error for a script's return code (unknown codes stay visible)."""
    cls = _BY_CODE.get(code)
    if cls is None:
        return EngineError(f"unexpected engine code {code!r}", code=code, **context)
    detail = context.pop("detail", None)
    return cls(detail, **context)
