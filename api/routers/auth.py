"""Accounts and sessions: register, login, refresh (rotating), logout, me."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Request, Response, status

from api.deps import CurrentUser, DbDep, SettingsDep
from api.errors import ApiError
from api.schemas import LoginIn, RefreshIn, RegisterIn, TokensOut, UserOut, problem_responses
from api.security import (
    hash_password,
    issue_access_token,
    new_refresh_token,
    refresh_token_hash,
    verify_password,
)
from persistence import accounts
from persistence.accounts import Account, EmailTaken, Rotation

router = APIRouter(prefix="/auth", tags=["auth"])


def _user(account: Account) -> UserOut:
    return UserOut(id=account.id, email=account.email, name=account.name, role=account.role)


async def _session(request: Request, account: Account) -> TokensOut:
    settings = request.app.state.settings
    refresh, digest = new_refresh_token()
    await accounts.store_refresh_token(
        request.app.state.db, account.id, digest, settings.refresh_token_ttl_s
    )
    return await _tokens(request, account, refresh)


async def _tokens(request: Request, account: Account, refresh: str) -> TokensOut:
    state = request.app.state
    ttl_s = state.settings.access_token_ttl_s
    version = await state.token_versions.current(account.id)
    return TokensOut(
        user=_user(account),
        access_token=issue_access_token(state.jwt_secret, account.id, account.role, ttl_s, version),
        refresh_token=refresh,
        expires_in=ttl_s,
    )


@router.post(
    "/register",
    status_code=status.HTTP_201_CREATED,
    responses=problem_responses(409, 422, 429),
)
async def register(body: RegisterIn, request: Request, db: DbDep) -> TokensOut:
    """Creates a customer account and signs it in."""
    limiter = request.app.state.limiter
    await limiter.hit("register", _client(request))  # accounts are free: not from one address
    await limiter.hit("login", _client(request), body.email.lower())
    # argon2 takes a few hundred ms of CPU on purpose: in a thread, so the
    # worker's other requests (holds, the seat map) do not wait behind it.
    password_hash = await asyncio.to_thread(hash_password, body.password)
    try:
        account = await accounts.create_user(db, body.email, password_hash, body.name)
    except EmailTaken as exc:
        raise ApiError("email_taken") from exc
    return await _session(request, account)


@router.post("/login", responses=problem_responses(401, 422, 429))
async def login(body: LoginIn, request: Request, db: DbDep) -> TokensOut:
    await request.app.state.limiter.hit("login", _client(request), body.email.lower())
    account = await accounts.user_by_email(db, body.email)
    known_hash = account.password_hash if account else None
    if not await asyncio.to_thread(verify_password, known_hash, body.password):
        raise ApiError("invalid_credentials")
    assert account is not None
    return await _session(request, account)


@router.post("/refresh", responses=problem_responses(401, 422))
async def refresh(body: RefreshIn, request: Request, db: DbDep, settings: SettingsDep) -> TokensOut:
    """Swaps a refresh token for a new pair. Each refresh token works once: a
    second use revokes every token of its session."""
    new, digest = new_refresh_token()
    outcome, account = await accounts.rotate_refresh_token(
        db, refresh_token_hash(body.refresh_token), digest, settings.refresh_token_ttl_s
    )
    if outcome is Rotation.REUSED:
        raise ApiError("refresh_token_reused")
    if outcome is Rotation.INVALID or account is None:
        raise ApiError("invalid_token", "the refresh token is unknown, expired or revoked")
    return await _tokens(request, account, new)


@router.post("/logout", status_code=status.HTTP_204_NO_CONTENT, responses=problem_responses(401))
async def logout(body: RefreshIn, user: CurrentUser, db: DbDep, request: Request) -> Response:
    """Ends the session the refresh token belongs to, and every access token
    of the caller from the next request on (other sessions refresh theirs)."""
    await accounts.revoke_family(db, refresh_token_hash(body.refresh_token), user.user_id)
    await request.app.state.token_versions.bump(user.user_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/me", responses=problem_responses(401, 404))
async def me(user: CurrentUser, db: DbDep) -> UserOut:
    account = await accounts.user_by_id(db, user.user_id)
    if account is None:
        raise ApiError("invalid_token", "the account no longer exists")
    return _user(account)


def _client(request: Request) -> str:
    return request.client.host if request.client else "-"
