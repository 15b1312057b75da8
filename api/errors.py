"""Every error the API sends, in one table, and the handlers that send them.

Clients key on ``code``; titles are for people. Engine errors and the sale's
refusals (:class:`sales.errors.SaleRefused`) are mapped here and nowhere else.
"""

from __future__ import annotations

from typing import Any

import asyncpg
import redis.exceptions
import sqlalchemy.exc
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from api.problems import problem
from engine.errors import EngineError
from sales.errors import SaleRefused

# code -> (HTTP status, title)
PROBLEMS: dict[str, tuple[int, str]] = {
    # request shape
    "validation_error": (422, "The request is not valid"),
    "body_too_large": (413, "The request body is too large"),
    "headers_too_large": (431, "The request's headers are too large"),
    "invalid_json": (400, "The request body is not valid JSON"),
    "idempotency_key_reused": (422, "This Idempotency-Key was used for a different request"),
    "idempotency_in_progress": (409, "A request with this Idempotency-Key is in progress"),
    # auth
    "invalid_token": (401, "The token is missing, malformed, expired or revoked"),
    "invalid_credentials": (401, "Email or password is wrong"),
    "refresh_token_reused": (401, "This refresh token was already used; the session is revoked"),
    "forbidden": (403, "You may not do this"),
    "own_role": (403, "Nobody changes their own role"),
    "email_taken": (409, "An account with this email exists"),
    "rate_limited": (429, "Too many requests"),
    # resources
    "not_found": (404, "No such resource"),
    "method_not_allowed": (405, "Method not allowed"),
    "application_exists": (409, "You already have a pending application"),
    "application_decided": (409, "This application was already decided"),
    "not_a_customer": (409, "Only customers apply to become organizers"),
    # events
    "event_not_draft": (409, "Only a draft event can be changed this way"),
    "event_ended": (409, "The event is closed or cancelled"),
    "section_exists": (409, "The event already has a section with this code"),
    "event_too_large": (422, "The event would have too many seats"),
    "no_sections": (409, "An event needs a section before it goes on sale"),
    "invalid_state": (409, "The event cannot move to that state"),
    # holds and orders
    "hold_not_active": (409, "The hold is no longer active"),
    "order_exists": (409, "An order for this hold exists"),
    "order_not_paid": (409, "Only a paid order can be refunded"),
    "refund_in_progress": (409, "This order's refund is under way"),
    "ticket_checked_in": (409, "A ticket of this order was admitted: no refund"),
    "refund_closed": (403, "The event has started or closed: refunds are its organizer's call"),
    "payments_unavailable": (503, "The payment provider is unavailable; try again"),
    "invalid_signature": (400, "The webhook signature is missing, wrong or stale"),
    "not_settled": (503, "The payment event could not be settled now; send it again"),
    "order_not_sold": (409, "The engine has no sale for this order"),
    # tickets and the door
    "invalid_ticket": (400, "Not a valid ticket for this event"),
    "already_checked_in": (409, "This ticket was already checked in"),
    "ticket_refunding": (409, "This ticket's order is being refunded"),
    "ticket_revoked": (410, "This ticket was revoked (its order was refunded)"),
    # engine (mirrors engine.errors)
    "event_not_found": (404, "The event has no inventory on sale"),
    "event_not_on_sale": (409, "The event is not on sale"),
    "seats_unavailable": (409, "Some of the seats are held or sold"),
    "sold_out": (409, "Not enough tickets left in this section"),
    "customer_limit": (403, "This would exceed the tickets allowed per customer"),
    "queue_pass_required": (403, "The sale is behind a waiting room: hold with your queue pass"),
    "queue_pass_invalid": (403, "This queue pass is not good for you, this event or now"),
    "queue_off": (409, "This event has no waiting room open"),
    "hold_expired": (410, "The hold has expired or was released"),
    "hold_not_found": (404, "No such hold"),
    "hold_id_conflict": (409, "This hold id belongs to someone else"),
    "already_confirmed": (409, "The hold was already confirmed"),
    "invalid_request": (422, "The request is not valid"),
    "unknown_seat": (422, "No such seat in this event"),
    "duplicate_seat": (422, "A seat is listed twice"),
    "unknown_section": (422, "No such section in this event"),
    "wrong_section_kind": (422, "Seated sections are held by seat, general ones by quantity"),
    "invalid_quantity": (422, "The quantity must be positive"),
    "engine_timeout": (503, "The on-sale engine is busy; try again"),
    "overloaded": (503, "The server is busy; try again"),
    "database_unavailable": (503, "The database is unavailable; try again"),
    "redis_unavailable": (503, "The inventory store is unavailable; try again"),
    "engine_unavailable": (503, "The on-sale engine is unavailable; try again"),
    "internal_error": (500, "Something went wrong on our side"),
}

RETRY_AFTER_S = {
    "engine_timeout": 1,
    "overloaded": 1,
    "database_unavailable": 2,
    "redis_unavailable": 2,
    "engine_unavailable": 2,
    "idempotency_in_progress": 1,
    "payments_unavailable": 5,
    "not_settled": 5,
}


class ApiError(Exception):
    """Raise anywhere in a request: becomes a problem+json response."""

    def __init__(
        self,
        code: str,
        detail: str | None = None,
        *,
        headers: dict[str, str] | None = None,
        **extra: Any,
    ) -> None:
        self.status, self.title = PROBLEMS[code]
        super().__init__(detail or self.title)
        self.code = code
        self.detail = detail
        self.headers = dict(headers or {})
        self.extra = extra
        if code in RETRY_AFTER_S and "Retry-After" not in self.headers:
            self.headers["Retry-After"] = str(RETRY_AFTER_S[code])
            self.extra.setdefault("retry_after_s", RETRY_AFTER_S[code])

    def response(self) -> JSONResponse:
        return problem(
            self.status, self.code, self.title, self.detail, headers=self.headers, **self.extra
        )


def from_engine(exc: EngineError) -> ApiError:
    shown = ("unavailable", "section", "limit", "held_limit")
    extra = {k: v for k, v in exc.context.items() if k in shown}
    if exc.code == "sold_out" and "available" in exc.context:
        extra["available"] = exc.context["available"]
    code = exc.code if exc.code in PROBLEMS else "internal_error"
    detail = exc.detail if exc.detail != exc.title else None
    return ApiError(code, detail, **extra)


def from_sale(exc: SaleRefused) -> ApiError:
    return ApiError(exc.code, exc.detail, **exc.context)


def from_validation(exc: RequestValidationError) -> ApiError:
    errors = [
        {
            "field": ".".join(str(p) for p in err.get("loc", ()) if p != "body"),
            "message": err.get("msg", ""),
            "type": err.get("type", ""),
        }
        for err in exc.errors()
    ]
    if any(e["type"] == "json_invalid" for e in errors):
        return ApiError("invalid_json", errors=errors)
    return ApiError("validation_error", errors=errors)


def as_problem(exc: Exception) -> ApiError:
    """Any exception as the problem the handlers below would answer with (for
    the hold route's lean path, which runs outside FastAPI's handlers)."""
    if isinstance(exc, ApiError):
        return exc
    if isinstance(exc, EngineError):
        return from_engine(exc)
    if isinstance(exc, SaleRefused):
        return from_sale(exc)
    if isinstance(exc, RequestValidationError):
        return from_validation(exc)
    if isinstance(exc, StarletteHTTPException) and exc.status_code == 413:
        return ApiError("body_too_large", str(exc.detail))
    return unavailable(exc) or ApiError("internal_error")


_HTTP_CODES = {
    400: "invalid_request",
    401: "invalid_token",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "body_too_large",
}


def install(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def api_error(_: Request, exc: ApiError) -> JSONResponse:
        return exc.response()

    @app.exception_handler(EngineError)
    async def engine_error(_: Request, exc: EngineError) -> JSONResponse:
        return from_engine(exc).response()

    @app.exception_handler(SaleRefused)
    async def sale_refused(_: Request, exc: SaleRefused) -> JSONResponse:
        return from_sale(exc).response()

    @app.exception_handler(RequestValidationError)
    async def validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        return from_validation(exc).response()

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = _HTTP_CODES.get(exc.status_code)
        if code is None:
            code = "invalid_request" if exc.status_code < 500 else "internal_error"
        error = ApiError(code, str(exc.detail), headers=dict(exc.headers or {}))
        if code == "invalid_request":
            error.status = exc.status_code if exc.status_code < 500 else 400
        return error.response()

    async def dependency_error(_: Request, exc: Exception) -> JSONResponse:
        return (unavailable(exc) or ApiError("internal_error")).response()

    # Handled here, not by the catch-all below (which Starlette re-raises).
    for dependency in DEPENDENCY_ERRORS:
        app.add_exception_handler(dependency, dependency_error)

    @app.exception_handler(Exception)
    async def unexpected(_: Request, exc: Exception) -> JSONResponse:
        return (unavailable(exc) or ApiError("internal_error")).response()


def unavailable(exc: BaseException) -> ApiError | None:
    """A dependency that is full or away: 503 with Retry-After, never a 500,
    so clients (and Stripe's webhooks) come back rather than give up."""
    if isinstance(exc, sqlalchemy.exc.TimeoutError) or (
        isinstance(exc, redis.exceptions.ConnectionError)
        and ("No connection available" in str(exc) or "Too many connections" in str(exc))
    ):
        return ApiError("overloaded", "every connection is in use; try again")
    if isinstance(exc, sqlalchemy.exc.DBAPIError) and exc.connection_invalidated:
        return ApiError("database_unavailable")
    if isinstance(exc, (sqlalchemy.exc.InterfaceError, sqlalchemy.exc.OperationalError)):
        return ApiError("database_unavailable")
    if isinstance(exc, (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)):
        return ApiError("redis_unavailable")
    if isinstance(exc, ConnectionError | asyncpg.PostgresConnectionError | asyncpg.InterfaceError):
        return ApiError("database_unavailable")  # connecting to Postgres failed outright
    return None


DEPENDENCY_ERRORS: tuple[type[Exception], ...] = (
    sqlalchemy.exc.SQLAlchemyError,
    redis.exceptions.RedisError,
    ConnectionError,
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
)
