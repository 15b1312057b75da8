"""Request dependencies, as ``Annotated`` aliases routers declare by type.

All ``async def``: FastAPI runs a plain ``def`` dependency in its thread pool,
a thread hop per dependency per request that the hold path cannot afford.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
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


_bearer = HTTPBearer(auto_error=False, description="an access token from /auth/login")


async def _principal(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    token = credentials.credentials if credentials else ""
    if not token:
        raise ApiError(
            "invalid_token",
            "send an access token: Authorization: Bearer <token>",
            headers={"WWW-Authenticate": "Bearer"},
        )
    try:
        principal = read_access_token(request.app.state.jwt_secret, token.strip())
    except InvalidToken as exc:
        raise ApiError("invalid_token", str(exc), headers={"WWW-Authenticate": "Bearer"}) from exc
    request.state.principal = principal  # for rate limits and logs
    return principal


CurrentUser = Annotated[Principal, Depends(_principal)]


async def _optional_principal(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal | None:
    """The caller if a valid token came with the request (public reads that
    show more to owners); a bad token is still an error, not anonymity."""
    if credentials is None:
        return None
    return await _principal(request, credentials)


OptionalUser = Annotated[Principal | None, Depends(_optional_principal)]


def require_role(*roles: str) -> object:
    async def check(user: CurrentUser) -> Principal:
        if user.role not in roles:
            raise ApiError("forbidden", f"this needs the role {' or '.join(roles)}")
        return user

    return Depends(check)


Customer = Annotated[Principal, require_role("customer")]
Organizer = Annotated[Principal, require_role("organizer", "admin")]
Admin = Annotated[Principal, require_role("admin")]
