"""Request dependencies, as ``Annotated`` aliases routers declare by type.

All ``async def``: FastAPI runs a plain ``def`` dependency in its thread pool,
a thread hop per dependency per request that the hold path cannot afford.
"""

from __future__ import annotations

from typing import Annotated, Any, TypeVar

from fastapi import Depends, Header, Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ValidationError
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine

from api.errors import ApiError
from api.event_cache import EventCache
from api.security import InvalidToken, Verified, forget_token, read_access_token
from api.settings import Settings
from engine.client import EngineClient
from persistence import audit as audit_log
from sales.access import Principal
from sales.payments import Payments
from sales.ticketing import TicketSigner
from sales.vocabulary import Role


async def _db(request: Request) -> AsyncEngine:
    return request.app.state.db


async def _engine(request: Request) -> EngineClient:
    return request.app.state.engine


async def _redis(request: Request) -> Redis:
    return request.app.state.redis


async def _settings(request: Request) -> Settings:
    return request.app.state.settings


async def _events(request: Request) -> EventCache:
    return request.app.state.event_cache


async def _payments(request: Request) -> Payments | None:
    return request.app.state.payments


async def _signer(request: Request) -> TicketSigner:
    return request.app.state.tickets


DbDep = Annotated[AsyncEngine, Depends(_db)]
EngineDep = Annotated[EngineClient, Depends(_engine)]
RedisDep = Annotated[Redis, Depends(_redis)]
SettingsDep = Annotated[Settings, Depends(_settings)]
EventsDep = Annotated[EventCache, Depends(_events)]
PaymentsDep = Annotated[Payments | None, Depends(_payments)]
SignerDep = Annotated[TicketSigner, Depends(_signer)]


def _bearer(authorization: str) -> str:
    scheme, _, token = authorization.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise ApiError(
            "invalid_token",
            "send an access token: Authorization: Bearer <token>",
            headers={"WWW-Authenticate": "Bearer"},
        )
    return token


def _verified(token: str, jwt_secret: str) -> Verified:
    try:
        return read_access_token(jwt_secret, token)
    except InvalidToken as exc:
        raise ApiError("invalid_token", str(exc), headers={"WWW-Authenticate": "Bearer"}) from exc


def signed_principal(authorization: str, jwt_secret: str) -> Principal:
    """The caller as a signed, unexpired token says, revoked or not: only for
    public reads, which show a token's holder nothing private."""
    return _verified(_bearer(authorization), jwt_secret).principal


async def principal_of(state: Any, authorization: str) -> Principal:
    """The caller, from an ``Authorization: Bearer <access token>`` header:
    signed, unexpired, and not revoked by a role change or logout since it
    was issued (one Redis GET)."""
    token = _bearer(authorization)
    verified = _verified(token, state.jwt_secret)
    if verified.version < await state.token_versions.current(verified.principal.user_id):
        forget_token(state.jwt_secret, token)
        raise ApiError(
            "invalid_token",
            "the access token was revoked (a role change or logout): sign in again",
            headers={"WWW-Authenticate": "Bearer"},
        )
    return verified.principal


async def _principal(request: Request) -> Principal:
    """The caller. Read straight from the header (no HTTPBearer sub-dependency:
    each level of dependency costs time); /docs learns of the scheme from
    :func:`api.app.document_bearer_auth`."""
    principal = await principal_of(request.app.state, request.headers.get("authorization", ""))
    request.state.principal = principal  # for rate limits and logs
    return principal


CurrentUser = Annotated[Principal, Depends(_principal)]

IdempotencyKey = Annotated[
    str | None,
    Header(alias="Idempotency-Key", description="a retry with the same key gets the first answer"),
]


async def _optional_principal(request: Request) -> Principal | None:
    """The caller if a token came with the request (public reads that show
    more to owners); a bad token is still an error, not anonymity."""
    if "authorization" not in request.headers:
        return None
    return await _principal(request)


OptionalUser = Annotated[Principal | None, Depends(_optional_principal)]


def require_role(*roles: Role) -> object:
    async def check(request: Request) -> Principal:
        user = await _principal(request)  # called, not depended on: one level, not two
        if user.role not in roles:
            raise ApiError("forbidden", f"this needs the role {' or '.join(roles)}")
        return user

    return Depends(check)


Customer = Annotated[Principal, require_role(Role.CUSTOMER)]


async def customer(request: Request) -> Principal:
    """``Customer`` for a route that calls rather than depends (the hold path)."""
    user = await _principal(request)
    if user.role is not Role.CUSTOMER:
        raise ApiError("forbidden", "this needs the role customer")
    return user


_M = TypeVar("_M", bound=BaseModel)


async def parse_body(request: Request, model: type[_M]) -> _M:
    """The JSON body as ``model``, with FastAPI's own error shape on failure."""
    return parse_json(await request.body(), model)


def parse_json(raw: bytes, model: type[_M]) -> _M:
    if not raw.strip():  # what FastAPI answers for a required body that is absent
        raise RequestValidationError(
            [{"type": "missing", "loc": ("body",), "msg": "Field required", "input": None}]
        )
    try:
        return model.model_validate_json(raw)
    except ValidationError as exc:
        errors = [{**e, "loc": ("body", *e["loc"])} for e in exc.errors()]
        raise RequestValidationError(errors) from exc


Organizer = Annotated[Principal, require_role(Role.ORGANIZER, Role.ADMIN)]
Admin = Annotated[Principal, require_role(Role.ADMIN)]


class Audit:
    """Records what the caller did in the audit log: who (the request's
    principal), from where (its address), what, on which subject."""

    def __init__(self, request: Request) -> None:
        self.request = request

    async def __call__(self, action: str, subject: str, **detail: Any) -> None:
        request = self.request
        who: Principal | None = getattr(request.state, "principal", None)
        await audit_log.record(
            request.app.state.db,
            actor_id=who.user_id if who else None,
            actor_role=str(who.role) if who else None,
            client=request.client.host if request.client else None,
            action=action,
            subject=subject,
            detail=detail,
        )


async def _audit(request: Request) -> Audit:
    return Audit(request)


AuditDep = Annotated[Audit, Depends(_audit)]
