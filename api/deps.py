"""Request dependencies, as ``Annotated`` aliases routers declare by type.

All ``async def``: FastAPI runs a plain ``def`` dependency in its thread pool,
a thread hop per dependency per request that the hold path cannot afford.
"""

from __future__ import annotations

from typing import Annotated, TypeVar

from fastapi import Depends, Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ValidationError
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine

from api.errors import ApiError
from api.security import InvalidToken, Principal, read_access_token
from api.settings import Settings
from engine.client import EngineClient


async def _db(request: Request) -> AsyncEngine:
    return request.app.state.db


async def _engine(request: Request) -> EngineClient:
    return request.app.state.engine


async def _redis(request: Request) -> Redis:
    return request.app.state.redis


async def _settings(request: Request) -> Settings:
    return request.app.state.settings


DbDep = Annotated[AsyncEngine, Depends(_db)]
EngineDep = Annotated[EngineClient, Depends(_engine)]
RedisDep = Annotated[Redis, Depends(_redis)]
SettingsDep = Annotated[Settings, Depends(_settings)]


async def _principal(request: Request) -> Principal:
    """The caller, from ``Authorization: Bearer <access token>``. Read straight
    from the header (no HTTPBearer sub-dependency: each level of dependency
    costs the hold path time); /docs learns of the scheme from
    :func:`api.app.document_bearer_auth`."""
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise ApiError(
            "invalid_token",
            "send an access token: Authorization: Bearer <token>",
            headers={"WWW-Authenticate": "Bearer"},
        )
    try:
        principal = read_access_token(request.app.state.jwt_secret, token)
    except InvalidToken as exc:
        raise ApiError("invalid_token", str(exc), headers={"WWW-Authenticate": "Bearer"}) from exc
    request.state.principal = principal  # for rate limits and logs
    return principal


CurrentUser = Annotated[Principal, Depends(_principal)]


async def _optional_principal(request: Request) -> Principal | None:
    """The caller if a token came with the request (public reads that show
    more to owners); a bad token is still an error, not anonymity."""
    if "authorization" not in request.headers:
        return None
    return await _principal(request)


OptionalUser = Annotated[Principal | None, Depends(_optional_principal)]


def require_role(*roles: str) -> object:
    async def check(request: Request) -> Principal:
        user = await _principal(request)  # called, not depended on: one level, not two
        if user.role not in roles:
            raise ApiError("forbidden", f"this needs the role {' or '.join(roles)}")
        return user

    return Depends(check)


Customer = Annotated[Principal, require_role("customer")]


async def customer(request: Request) -> Principal:
    """``Customer`` for a route that calls rather than depends (the hold path)."""
    user = await _principal(request)
    if user.role != "customer":
        raise ApiError("forbidden", "this needs the role customer")
    return user


_M = TypeVar("_M", bound=BaseModel)


async def parse_body(request: Request, model: type[_M]) -> _M:
    """The JSON body as ``model``, with FastAPI's own error shape on failure."""
    raw = await request.body()
    if not raw.strip():  # what FastAPI answers for a required body that is absent
        raise RequestValidationError(
            [{"type": "missing", "loc": ("body",), "msg": "Field required", "input": None}]
        )
    try:
        return model.model_validate_json(raw)
    except ValidationError as exc:
        errors = [{**e, "loc": ("body", *e["loc"])} for e in exc.errors()]
        raise RequestValidationError(errors) from exc


Organizer = Annotated[Principal, require_role("organizer", "admin")]
Admin = Annotated[Principal, require_role("admin")]
