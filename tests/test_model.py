"""Pure logic: seat ids, wire forms and error codes (no servers)."""

from __future__ import annotations

import pytest

from engine import errors
from engine.model import (
    HoldQuantity,
    HoldSeats,
    SeatedSection,
    outcome_from_wire,
    section_of,
)


def test_seat_ids_are_section_row_seat_counted_from_one() -> None:
    section = SeatedSection("A", rows=2, seats_per_row=3)
    assert section.seat_ids() == ["A-1-1", "A-1-2", "A-1-3", "A-2-1", "A-2-2", "A-2-3"]
    assert section.capacity == 6
    assert section_of("BALCONY_2-14-7") == "BALCONY_2"
    with pytest.raises(ValueError):
        section_of("A-0-1")


def test_every_script_code_maps_to_its_own_error_class() -> None:
    codes = [
        "event_not_found",
        "event_not_on_sale",
        "seats_unavailable",
        "sold_out",
        "customer_limit",
        "hold_expired",
        "hold_not_found",
        "hold_id_conflict",
        "already_confirmed",
        "invalid_request",
        "unknown_seat",
        "duplicate_seat",
        "unknown_section",
        "wrong_section_kind",
        "invalid_quantity",
    ]
    for code in codes:
        error = errors.error_from_code(code)
        assert error.code == code and type(error) is not errors.EngineError
    assert isinstance(errors.error_from_code("duplicate_seat"), errors.InvalidRequest)


def test_unknown_code_stays_visible() -> None:
    error = errors.error_from_code("brand_new_code")
    assert error.code == "engine_error" and "brand_new_code" in error.detail


def test_failed_wire_result_becomes_error_with_context() -> None:
    command = HoldSeats("h", "c", ("A-1-1",), 1000)
    outcome = outcome_from_wire(
        command, {"ok": False, "code": "seats_unavailable", "unavailable": ["A-1-1"]}
    )
    assert isinstance(outcome, errors.SeatsUnavailable)
    assert outcome.context == {"unavailable": ["A-1-1"]}


def test_quantity_hold_wire_form() -> None:
    wire = HoldQuantity("h", "c", "FLOOR", 2, 5000).to_wire()
    assert wire == {
        "op": "hold",
        "hold_id": "h",
        "customer_id": "c",
        "section": "FLOOR",
        "quantity": 2,
        "ttl_ms": 5000,
    }
