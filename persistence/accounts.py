"""Users, refresh-token families and organizer applications in Postgres."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import Enum
from typing import Any

from sqlalchemy import func, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from persistence.models import OrganizerApplication, RefreshToken, User
from sales.vocabulary import ApplicationStatus, Role


class EmailTaken(Exception):
    pass


@dataclass(frozen=True)
class Account:
    id: uuid.UUID
    email: str
    name: str
    role: Role
    password_hash: str


def _account(user: Any) -> Account:
    """From a ``users`` row (or a User)."""
    return Account(user.id, user.email, user.name, Role(user.role), user.password_hash)


async def create_user(
    db: AsyncEngine, email: str, password_hash: str, name: str, role: Role = Role.CUSTOMER
) -> Account:
    user = User(id=uuid.uuid4(), email=email, password_hash=password_hash, name=name, role=role)
    try:
        async with db.begin() as conn:
            await conn.execute(
                insert(User).values(
                    id=user.id, email=email, password_hash=password_hash, name=name, role=role
                )
            )
    except IntegrityError as exc:  # users_email_lower: one account per address
        raise EmailTaken(email) from exc
    return _account(user)


async def user_by_email(db: AsyncEngine, email: str) -> Account | None:
    async with db.connect() as conn:
        row = (
            await conn.execute(select(User).where(func.lower(User.email) == email.lower()))
        ).one_or_none()
    return _account(row) if row else None


async def user_by_id(db: AsyncEngine, user_id: uuid.UUID) -> Account | None:
    async with db.connect() as conn:
        row = (await conn.execute(select(User).where(User.id == user_id))).one_or_none()
    return _account(row) if row else None


async def set_role(db: AsyncEngine, user_id: uuid.UUID, role: Role) -> Account | None:
    """A new role, and if it changed, the end of every session of the user
    (their refresh tokens are revoked in the same transaction): they sign in
    again under the new role."""
    async with db.begin() as conn:
        before = (
            await conn.execute(select(User.role).where(User.id == user_id).with_for_update())
        ).scalar_one_or_none()
        if before is None:
            return None
        row = (
            await conn.execute(
                update(User).where(User.id == user_id).values(role=role).returning(User)
            )
        ).one()
        if before != role:
            await _revoke_sessions(conn, user_id)
    return _account(row)


async def _revoke_sessions(conn: AsyncConnection, user_id: uuid.UUID) -> None:
    await conn.execute(
        update(RefreshToken)
        .where(RefreshToken.user_id == user_id, RefreshToken.revoked_at.is_(None))
        .values(revoked_at=datetime.now(UTC))
    )


async def set_password(db: AsyncEngine, user_id: uuid.UUID, password_hash: str) -> None:
    async with db.begin() as conn:
        await conn.execute(
            update(User).where(User.id == user_id).values(password_hash=password_hash)
        )


# ---------------------------------------------------------------- refresh tokens


async def store_refresh_token(
    db: AsyncEngine,
    user_id: uuid.UUID,
    token_hash: str,
    ttl_s: int,
    family_id: uuid.UUID | None = None,
) -> None:
    async with db.begin() as conn:
        await conn.execute(
            insert(RefreshToken).values(
                id=uuid.uuid4(),
                user_id=user_id,
                family_id=family_id or uuid.uuid4(),
                token_hash=token_hash,
                expires_at=datetime.now(UTC) + timedelta(seconds=ttl_s),
            )
        )


class Rotation(Enum):
    ROTATED = "rotated"
    INVALID = "invalid"  # unknown, expired or revoked
    REUSED = "reused"  # already rotated: the family is now revoked


async def rotate_refresh_token(
    db: AsyncEngine, token_hash: str, new_hash: str, ttl_s: int
) -> tuple[Rotation, Account | None]:
    """Swaps a refresh token for a new one of the same family, once.

    A token presented after it was rotated means two parties hold it (a
    stolen copy, or the real client after the thief): the whole family is
    revoked, so both must log in again.
    """
    now = datetime.now(UTC)
    async with db.begin() as conn:
        token = (
            await conn.execute(
                select(RefreshToken).where(RefreshToken.token_hash == token_hash).with_for_update()
            )
        ).one_or_none()
        if token is None or token.revoked_at is not None or token.expires_at <= now:
            return Rotation.INVALID, None
        if token.rotated_at is not None:
            await conn.execute(
                update(RefreshToken)
                .where(RefreshToken.family_id == token.family_id, RefreshToken.revoked_at.is_(None))
                .values(revoked_at=now)
            )
            return Rotation.REUSED, None
        await conn.execute(
            update(RefreshToken).where(RefreshToken.id == token.id).values(rotated_at=now)
        )
        await conn.execute(
            insert(RefreshToken).values(
                id=uuid.uuid4(),
                user_id=token.user_id,
                family_id=token.family_id,
                token_hash=new_hash,
                expires_at=now + timedelta(seconds=ttl_s),
            )
        )
        user = (await conn.execute(select(User).where(User.id == token.user_id))).one()
    return Rotation.ROTATED, _account(user)


async def revoke_family(db: AsyncEngine, token_hash: str, user_id: uuid.UUID) -> bool:
    """Logout: ends the session the token belongs to (only the caller's own)."""
    async with db.begin() as conn:
        family = (
            await conn.execute(
                select(RefreshToken.family_id).where(
                    RefreshToken.token_hash == token_hash, RefreshToken.user_id == user_id
                )
            )
        ).scalar_one_or_none()
        if family is None:
            return False
        await conn.execute(
            update(RefreshToken)
            .where(RefreshToken.family_id == family, RefreshToken.revoked_at.is_(None))
            .values(revoked_at=datetime.now(UTC))
        )
    return True


# ---------------------------------------------------------------- organizer applications


@dataclass(frozen=True)
class Application:
    id: uuid.UUID
    user_id: uuid.UUID
    organization: str
    status: ApplicationStatus
    created_at: datetime
    decided_at: datetime | None


class ApplicationConflict(Exception):
    def __init__(self, code: str) -> None:
        super().__init__(code)
        self.code = code


def _application(row: Any) -> Application:
    return Application(
        row.id,
        row.user_id,
        row.organization,
        ApplicationStatus(row.status),
        row.created_at,
        row.decided_at,
    )


async def apply_as_organizer(db: AsyncEngine, user_id: uuid.UUID, organization: str) -> Application:
    async with db.begin() as conn:
        # Serializes one user's applications, so two at once cannot both be pending;
        # the role is read here, not from the token, which may predate an approval.
        role = (
            await conn.execute(select(User.role).where(User.id == user_id).with_for_update())
        ).scalar_one_or_none()
        if role != Role.CUSTOMER:
            raise ApplicationConflict("not_a_customer")
        pending = (
            await conn.execute(
                select(OrganizerApplication.id).where(
                    OrganizerApplication.user_id == user_id,
                    OrganizerApplication.status == ApplicationStatus.PENDING,
                )
            )
        ).first()
        if pending:
            raise ApplicationConflict("application_exists")
        row = (
            await conn.execute(
                insert(OrganizerApplication)
                .values(id=uuid.uuid4(), user_id=user_id, organization=organization)
                .returning(*OrganizerApplication.__table__.c)
            )
        ).one()
    return _application(row)


async def list_applications(
    db: AsyncEngine, status: ApplicationStatus | None = None
) -> list[Application]:
    query = select(OrganizerApplication).order_by(OrganizerApplication.created_at)
    if status:
        query = query.where(OrganizerApplication.status == status)
    async with db.connect() as conn:
        return [_application(r) for r in (await conn.execute(query)).all()]


async def decide_application(
    db: AsyncEngine, application_id: uuid.UUID, approve: bool, admin_id: uuid.UUID
) -> Application | None:
    """Approving makes the applicant an organizer, in the same transaction."""
    async with db.begin() as conn:
        row = (
            await conn.execute(
                select(OrganizerApplication)
                .where(OrganizerApplication.id == application_id)
                .with_for_update()
            )
        ).one_or_none()
        if row is None:
            return None
        if row.status != ApplicationStatus.PENDING:
            raise ApplicationConflict("application_decided")
        decided = (
            await conn.execute(
                update(OrganizerApplication)
                .where(OrganizerApplication.id == application_id)
                .values(
                    status=ApplicationStatus.APPROVED if approve else ApplicationStatus.REJECTED,
                    decided_at=datetime.now(UTC),
                    decided_by=admin_id,
                )
                .returning(*OrganizerApplication.__table__.c)
            )
        ).one()
        if approve:
            promoted = await conn.execute(
                update(User)
                .where(User.id == row.user_id, User.role == Role.CUSTOMER)
                .values(role=Role.ORGANIZER)
            )
            if promoted.rowcount:
                await _revoke_sessions(conn, row.user_id)
    return _application(decided)
