"""Becoming an organizer (apply → an admin decides) and user roles."""

from __future__ import annotations

import uuid

from fastapi import APIRouter, Query, Request, status

from api.deps import Admin, Audit, AuditDep, CurrentUser, DbDep
from api.errors import ApiError
from api.schemas import (
    ApplicationIn,
    ApplicationOut,
    AuditEntryOut,
    RoleIn,
    UserOut,
    problem_responses,
)
from persistence import accounts, audit
from persistence.accounts import Application, ApplicationConflict
from sales.vocabulary import ApplicationStatus, Role

router = APIRouter(tags=["organizers"])


def _out(a: Application) -> ApplicationOut:
    return ApplicationOut(
        id=a.id,
        user_id=a.user_id,
        organization=a.organization,
        status=a.status,
        created_at=a.created_at,
        decided_at=a.decided_at,
    )


@router.post(
    "/organizer-applications",
    status_code=status.HTTP_201_CREATED,
    responses=problem_responses(401, 409, 422),
)
async def apply(body: ApplicationIn, user: CurrentUser, db: DbDep) -> ApplicationOut:
    """A customer asks to sell tickets; an admin approves or rejects."""
    if user.role is not Role.CUSTOMER:
        raise ApiError("not_a_customer")
    try:
        return _out(await accounts.apply_as_organizer(db, user.user_id, body.organization))
    except ApplicationConflict as exc:
        raise ApiError(exc.code) from exc


@router.get("/admin/organizer-applications", responses=problem_responses(401, 403))
async def applications(
    _: Admin, db: DbDep, status: ApplicationStatus | None = None
) -> list[ApplicationOut]:
    return [_out(a) for a in await accounts.list_applications(db, status)]


async def _decide(
    request: Request, audit: Audit, application_id: uuid.UUID, approve: bool, admin_id: uuid.UUID
) -> ApplicationOut:
    db = request.app.state.db
    try:
        decided = await accounts.decide_application(db, application_id, approve, admin_id)
    except ApplicationConflict as exc:
        raise ApiError(exc.code) from exc
    if decided is None:
        raise ApiError("not_found", "no such application")
    if approve:  # a new role: the applicant's tokens and sessions end
        await request.app.state.token_versions.bump(decided.user_id)
        await audit("user.role_changed", str(decided.user_id), role="organizer",
                    application=str(application_id))  # fmt: skip
    return _out(decided)


@router.post(
    "/admin/organizer-applications/{application_id}/approve",
    responses=problem_responses(401, 403, 404, 409),
)
async def approve(
    application_id: uuid.UUID, admin: Admin, request: Request, audit: AuditDep
) -> ApplicationOut:
    """Approves: the applicant is an organizer once they sign in again (their
    tokens and sessions of the customer end at once)."""
    return await _decide(request, audit, application_id, True, admin.user_id)


@router.post(
    "/admin/organizer-applications/{application_id}/reject",
    responses=problem_responses(401, 403, 404, 409),
)
async def reject(
    application_id: uuid.UUID, admin: Admin, request: Request, audit: AuditDep
) -> ApplicationOut:
    return await _decide(request, audit, application_id, False, admin.user_id)


@router.patch("/admin/users/{user_id}/role", responses=problem_responses(401, 403, 404, 422))
async def set_role(
    user_id: uuid.UUID, body: RoleIn, admin: Admin, db: DbDep, request: Request, audit: AuditDep
) -> UserOut:
    """Sets a user's role. It takes effect on their next request: every token
    and session they hold ends, and they sign in again under the new role.
    Nobody changes their own role."""
    if user_id == admin.user_id:
        raise ApiError("own_role")
    account = await accounts.set_role(db, user_id, body.role)
    if account is None:
        raise ApiError("not_found", "no such user")
    await request.app.state.token_versions.bump(user_id)
    await audit("user.role_changed", str(user_id), role=str(account.role))
    return UserOut(id=account.id, email=account.email, name=account.name, role=account.role)


@router.get("/admin/audit", responses=problem_responses(401, 403, 422))
async def audit_log(
    _: Admin,
    db: DbDep,
    action: str | None = Query(default=None, max_length=64),
    subject: str | None = Query(default=None, max_length=128),
    limit: int = Query(default=100, ge=1, le=500),
) -> list[AuditEntryOut]:
    """Who changed roles, refunded orders, changed an event's status or checked
    tickets in: when, from which address, on what. Newest first."""
    found = await audit.entries(db, action=action, subject=subject, limit=limit)
    return [AuditEntryOut(**entry.__dict__) for entry in found]
