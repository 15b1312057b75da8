"""onsale's Postgres schema: the record of who bought what.

Redis holds the live inventory; these tables hold the control plane (users,
events, seat maps) and every confirmed sale, written behind from the outbox.
Sold tickets are unique per (event, seat) while valid: the last line of
defence against selling a seat twice (DESIGN rule 7). Every status, role and
kind is a word of :mod:`sales.vocabulary`, and a CHECK constraint keeps it so.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import (
    Boolean,
    CheckConstraint,
    DateTime,
    ForeignKey,
    ForeignKeyConstraint,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB, UUID
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from sales.vocabulary import (
    ApplicationStatus,
    EventStatus,
    OrderStatus,
    PaymentStatus,
    Role,
    SectionKind,
    TicketStatus,
    sql_in,
)


class Base(DeclarativeBase):
    pass


def _now() -> Mapped[datetime]:
    return mapped_column(DateTime(timezone=True), server_default=func.now(), nullable=False)


class User(Base):
    __tablename__ = "users"
    __table_args__ = (
        CheckConstraint(sql_in("role", Role), name="role_known"),
        Index("users_email_lower", text("lower(email)"), unique=True),
    )

    id: Mapped[uuid.UUID] = mapped_column(UUID, primary_key=True, default=uuid.uuid4)
    email: Mapped[str] = mapped_column(String(320))
    password_hash: Mapped[str] = mapped_column(Text)
    name: Mapped[str] = mapped_column(String(200))
    role: Mapped[str] = mapped_column(String(16), default=Role.CUSTOMER)
    created_at: Mapped[datetime] = _now()


class RefreshToken(Base):
    """Rotated on every use; presenting a rotated token revokes its family."""

    __tablename__ = "refresh_tokens"

    id: Mapped[uuid.UUID] = mapped_column(UUID, primary_key=True, default=uuid.uuid4)
    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    family_id: Mapped[uuid.UUID] = mapped_column(UUID, index=True)
    token_hash: Mapped[str] = mapped_column(String(128), unique=True)
    issued_at: Mapped[datetime] = _now()
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    rotated_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class OrganizerApplication(Base):
    __tablename__ = "organizer_applications"
    __table_args__ = (CheckConstraint(sql_in("status", ApplicationStatus), name="status_known"),)

    id: Mapped[uuid.UUID] = mapped_column(UUID, primary_key=True, default=uuid.uuid4)
    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    organization: Mapped[str] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(16), default=ApplicationStatus.PENDING)
    created_at: Mapped[datetime] = _now()
    decided_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    decided_by: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("users.id"))


class Event(Base):
    __tablename__ = "events"
    __table_args__ = (
        CheckConstraint(sql_in("status", EventStatus), name="status_known"),
        CheckConstraint("hold_ttl_s > 0", name="hold_ttl_positive"),
        CheckConstraint("max_tickets_per_customer >= 0", name="limit_not_negative"),
        CheckConstraint("max_held_per_customer >= 0", name="held_cap_not_negative"),
    )

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    organizer_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("users.id"))
    name: Mapped[str] = mapped_column(String(200))
    venue: Mapped[str] = mapped_column(String(200))
    description: Mapped[str | None] = mapped_column(Text)
    starts_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    currency: Mapped[str] = mapped_column(String(3))
    status: Mapped[str] = mapped_column(String(16), default=EventStatus.DRAFT)
    hold_ttl_s: Mapped[int] = mapped_column(Integer, default=600)
    max_tickets_per_customer: Mapped[int] = mapped_column(Integer, default=0)
    # places one customer may hold at once (0: no cap)
    max_held_per_customer: Mapped[int] = mapped_column(Integer, server_default="0")
    created_at: Mapped[datetime] = _now()
    published_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class Section(Base):
    __tablename__ = "sections"
    __table_args__ = (
        UniqueConstraint("event_id", "code"),
        CheckConstraint(sql_in("kind", SectionKind), name="kind_known"),
        CheckConstraint(
            f"(kind = '{SectionKind.SEATED}' AND rows > 0 AND seats_per_row > 0 "
            "AND capacity = rows * seats_per_row) OR "
            f"(kind = '{SectionKind.GENERAL}' AND rows IS NULL AND seats_per_row IS NULL "
            "AND capacity > 0)",
            name="shape_matches_kind",
        ),
        CheckConstraint("price_cents >= 0", name="price_not_negative"),
        # GA sold counts can never exceed capacity, whatever writes them.
        CheckConstraint("sold >= 0 AND sold <= capacity", name="sold_within_capacity"),
    )

    id: Mapped[uuid.UUID] = mapped_column(UUID, primary_key=True, default=uuid.uuid4)
    event_id: Mapped[str] = mapped_column(ForeignKey("events.id", ondelete="CASCADE"))
    code: Mapped[str] = mapped_column(String(32))
    name: Mapped[str] = mapped_column(String(200))
    kind: Mapped[str] = mapped_column(String(16))
    price_cents: Mapped[int] = mapped_column(Integer)
    rows: Mapped[int | None] = mapped_column(Integer)
    seats_per_row: Mapped[int | None] = mapped_column(Integer)
    capacity: Mapped[int] = mapped_column(Integer)
    # Valid tickets sold, kept by the writer in the transaction that adds them.
    sold: Mapped[int] = mapped_column(Integer, default=0, server_default="0")


class Seat(Base):
    """Every seat of a seated section, so a ticket's seat is a real one."""

    __tablename__ = "seats"

    event_id: Mapped[str] = mapped_column(
        ForeignKey("events.id", ondelete="CASCADE"), primary_key=True
    )
    id: Mapped[str] = mapped_column(String(64), primary_key=True)  # "A-3-12"
    section_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("sections.id", ondelete="CASCADE"))
    row: Mapped[int] = mapped_column(Integer)
    number: Mapped[int] = mapped_column(Integer)


class Order(Base):
    """Keyed by the caller-made order id, so every write of it is idempotent."""

    __tablename__ = "orders"
    __table_args__ = (
        CheckConstraint(sql_in("status", OrderStatus), name="status_known"),
        Index("orders_customer_created", "customer_id", "created_at"),
        UniqueConstraint("hold_id", name="orders_one_per_hold"),
    )

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    event_id: Mapped[str] = mapped_column(ForeignKey("events.id"), index=True)
    customer_id: Mapped[str] = mapped_column(String(64))
    hold_id: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(24))
    amount_cents: Mapped[int | None] = mapped_column(Integer)
    currency: Mapped[str | None] = mapped_column(String(3))
    created_at: Mapped[datetime] = _now()
    confirmed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    refunded_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    outbox_id: Mapped[str | None] = mapped_column(String(64))
    # sales.pricing.OrderItem as JSON:
    # [{"seat": "A-1-1", "section": "A" | "section": "FLOOR", "quantity": n, "price_cents": p}]
    items: Mapped[list[dict[str, Any]] | None] = mapped_column(JSONB)
    expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # e.g. "seats_resold" for a late payment refunded automatically
    status_reason: Mapped[str | None] = mapped_column(String(64))
    # set when a refund is asked of Stripe (persistence.orders.claim_refund):
    # from then on the door refuses the order's tickets
    refund_claimed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class Ticket(Base):
    """One admission: a seat, or one place in a general-admission section."""

    __tablename__ = "tickets"
    __table_args__ = (
        CheckConstraint(sql_in("status", TicketStatus), name="status_known"),
        ForeignKeyConstraint(["event_id", "seat_id"], ["seats.event_id", "seats.id"]),
        # The last line of defence: a seat is sold at most once while valid.
        Index(
            "tickets_one_valid_per_seat",
            "event_id",
            "seat_id",
            unique=True,
            postgresql_where=text(f"seat_id IS NOT NULL AND status = '{TicketStatus.VALID}'"),
        ),
        Index("tickets_event_section", "event_id", "section_code"),
    )

    id: Mapped[uuid.UUID] = mapped_column(
        UUID, primary_key=True, server_default=func.gen_random_uuid()
    )
    order_id: Mapped[str] = mapped_column(ForeignKey("orders.id", ondelete="CASCADE"), index=True)
    # No foreign key of its own: the order's and the seat's reach the event, and
    # a third check per ticket would slow the outbox writer's COPY (0002).
    event_id: Mapped[str] = mapped_column(String(64))
    section_code: Mapped[str] = mapped_column(String(32))
    seat_id: Mapped[str | None] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16), server_default=TicketStatus.VALID.value)
    # Random per ticket and signed into its token (sales/ticketing.py), so a token
    # names one issue of a ticket (0005).
    serial: Mapped[str] = mapped_column(
        String(16), server_default=text("substr(md5(gen_random_uuid()::text), 1, 16)")
    )
    created_at: Mapped[datetime] = _now()


class Payment(Base):
    __tablename__ = "payments"
    __table_args__ = (CheckConstraint(sql_in("status", PaymentStatus), name="status_known"),)

    id: Mapped[uuid.UUID] = mapped_column(UUID, primary_key=True, default=uuid.uuid4)
    order_id: Mapped[str] = mapped_column(ForeignKey("orders.id", ondelete="CASCADE"), index=True)
    provider: Mapped[str] = mapped_column(String(32))
    payment_intent_id: Mapped[str] = mapped_column(String(128), unique=True)
    status: Mapped[str] = mapped_column(String(32))
    amount_cents: Mapped[int] = mapped_column(Integer)
    currency: Mapped[str] = mapped_column(String(3))
    created_at: Mapped[datetime] = _now()
    updated_at: Mapped[datetime] = _now()


class ProcessedWebhookEvent(Base):
    """Provider events already handled: a redelivered webhook changes nothing."""

    __tablename__ = "processed_webhook_events"

    id: Mapped[str] = mapped_column(String(128), primary_key=True)
    provider: Mapped[str] = mapped_column(String(32))
    received_at: Mapped[datetime] = _now()


class CheckIn(Base):
    __tablename__ = "checkins"

    id: Mapped[uuid.UUID] = mapped_column(UUID, primary_key=True, default=uuid.uuid4)
    ticket_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("tickets.id", ondelete="CASCADE"), unique=True
    )
    event_id: Mapped[str] = mapped_column(ForeignKey("events.id"), index=True)
    checked_in_at: Mapped[datetime] = _now()
    scanned_by: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("users.id"))


class AuditEntry(Base):
    """Who did what, when, from where: role changes, refunds, event status
    changes and check-ins (``GET /admin/audit``). Kept as written, never
    updated; the actor is not a foreign key, so the record outlives accounts."""

    __tablename__ = "audit_log"
    __table_args__ = (Index("audit_log_at", "at"), Index("audit_log_action_at", "action", "at"))

    id: Mapped[uuid.UUID] = mapped_column(UUID, primary_key=True, default=uuid.uuid4)
    at: Mapped[datetime] = _now()
    actor_id: Mapped[uuid.UUID | None] = mapped_column(UUID)
    actor_role: Mapped[str | None] = mapped_column(String(24))
    client: Mapped[str | None] = mapped_column(String(64))  # the caller's address
    action: Mapped[str] = mapped_column(String(64))
    subject: Mapped[str] = mapped_column(String(128))  # the user, order, event or ticket acted on
    detail: Mapped[dict[str, Any]] = mapped_column(JSONB, default=dict)


class EventQueue(Base):
    """An event's waiting room settings (``PUT /events/{id}/queue``). Redis
    keeps who waits and who was admitted (lua/queue.lua); these are what a
    rebuild of the room starts from."""

    __tablename__ = "event_queues"
    __table_args__ = (
        CheckConstraint("admit_per_minute IS NULL OR admit_per_minute > 0", name="rate_positive"),
        CheckConstraint("max_active > 0", name="max_active_positive"),
        CheckConstraint("pass_ttl_s > 0", name="pass_ttl_positive"),
        CheckConstraint("pre_open_order IN ('random', 'fifo')", name="order_known"),
    )

    event_id: Mapped[str] = mapped_column(ForeignKey("events.id"), primary_key=True)
    enabled: Mapped[bool] = mapped_column(Boolean)
    opens_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    admit_per_minute: Mapped[int | None] = mapped_column(Integer)  # None: "auto"
    max_active: Mapped[int] = mapped_column(Integer)
    pass_ttl_s: Mapped[int] = mapped_column(Integer)
    pre_open_order: Mapped[str] = mapped_column(String(8), server_default="random")
    updated_at: Mapped[datetime] = _now()
