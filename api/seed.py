"""The embedded default's first admin and demo event, so a new user can try
the API from /docs at once; and `onsale create-admin`."""

from __future__ import annotations

import json
import os
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy.ext.asyncio import AsyncEngine

from api.security import hash_password
from persistence import accounts
from persistence.events import EventDraft, SectionSpec, event_status
from sales import catalog
from sales.vocabulary import EventStatus, Role, SectionKind

DEMO_EVENT_ID = "demo"
DEMO_SECTIONS = [
    SectionSpec("HALL", "Main hall", 6500, SectionKind.SEATED, rows=40, seats_per_row=75),
    SectionSpec("FLOOR", "Standing floor", 3900, SectionKind.GENERAL, capacity=1500),
]  # 3,000 seats and 1,500 standing places
ADMIN_EMAIL = "admin@example.com"  # RFC 2606: never a real mailbox; change it in production


@dataclass(frozen=True)
class Credentials:
    email: str
    password: str


async def create_admin(db: AsyncEngine, email: str, password: str) -> None:
    """Creates the account as an admin, or makes an existing one an admin
    with this password."""
    existing = await accounts.user_by_email(db, email)
    if existing is None:
        await accounts.create_user(db, email, hash_password(password), "Administrator", Role.ADMIN)
    else:
        await accounts.set_role(db, existing.id, Role.ADMIN)
        await accounts.set_password(db, existing.id, hash_password(password))


async def seed_admin(db: AsyncEngine, data_dir: Path) -> Credentials:
    """The embedded default's admin: made once, its password kept (0600) in
    the data directory so `make up` can print it again."""
    path = data_dir / "admin-credentials.json"
    if path.exists():
        saved = json.loads(path.read_text())
        credentials = Credentials(saved["email"], saved["password"])
        if await accounts.user_by_email(db, credentials.email) is not None:
            return credentials
    credentials = Credentials(ADMIN_EMAIL, secrets.token_urlsafe(12))
    await create_admin(db, credentials.email, credentials.password)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump({"email": credentials.email, "password": credentials.password}, f)
    return credentials


async def seed_demo_event(db: AsyncEngine, engine: catalog.Publisher) -> str:
    """A seated hall of 3,000 seats and a standing floor, on sale (once)."""
    status = await event_status(db, DEMO_EVENT_ID)
    admin = await accounts.user_by_email(db, ADMIN_EMAIL)
    if status in (EventStatus.CLOSED, EventStatus.CANCELLED):
        return DEMO_EVENT_ID  # someone ended the demo: leave it so
    if status is None:
        draft = EventDraft(
            name="onsale demo night",
            venue="Demo Hall",
            starts_at=datetime.now(UTC).replace(microsecond=0) + timedelta(days=30),
            currency="EUR",
            hold_ttl_s=600,
            max_tickets_per_customer=8,
        )
        await catalog.create_event(
            db, admin.id if admin else None, draft, DEMO_SECTIONS, event_id=DEMO_EVENT_ID
        )
    await catalog.put_on_sale(db, engine, DEMO_EVENT_ID)  # loads Redis if it lost the event
    return DEMO_EVENT_ID
