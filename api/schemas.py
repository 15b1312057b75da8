"""Request and response bodies of the public contract (docs/API.md).

Separate from the tables on purpose: what clients see changes only with the
contract, whatever the schema underneath does. Statuses, roles and kinds are
the words of :mod:`sales.vocabulary`.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, EmailStr, Field, model_validator

from persistence.events import DEFAULT_MAX_HELD_PER_CUSTOMER, DEFAULT_MAX_TICKETS_PER_CUSTOMER
from sales.vocabulary import (
    ApplicationStatus,
    EventStatus,
    HoldStatus,
    OrderStatus,
    Role,
    SeatStatus,
    SectionKind,
    TicketStatus,
)

Text200 = Annotated[str, Field(min_length=1, max_length=200)]
SectionCode = Annotated[str, Field(pattern=r"^[A-Za-z][A-Za-z0-9_]{0,31}$")]
SeatId = Annotated[
    str, Field(pattern=r"^[A-Za-z][A-Za-z0-9_]{0,31}-[1-9][0-9]{0,3}-[1-9][0-9]{0,3}$")
]


def _aware(value: datetime) -> datetime:
    if value.tzinfo is None:
        raise ValueError("give a time zone (RFC 3339, e.g. 2027-05-01T20:00:00Z)")
    return value


AwareDatetime = Annotated[datetime, AfterValidator(_aware)]


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


# ---------------------------------------------------------------- auth


class RegisterIn(Body):
    email: EmailStr = Field(max_length=320)
    password: str = Field(min_length=8, max_length=256)
    name: Text200


class LoginIn(Body):
    email: EmailStr = Field(max_length=320)
    password: str = Field(min_length=1, max_length=256)


class RefreshIn(Body):
    refresh_token: str = Field(min_length=1, max_length=200)


class UserOut(BaseModel):
    id: uuid.UUID
    email: str
    name: str
    role: Role


class TokensOut(BaseModel):
    user: UserOut
    access_token: str
    refresh_token: str
    token_type: Literal["bearer"] = "bearer"
    expires_in: int


class RoleIn(Body):
    role: Role


class ApplicationIn(Body):
    organization: Text200


class ApplicationOut(BaseModel):
    id: uuid.UUID
    user_id: uuid.UUID
    organization: str
    status: ApplicationStatus
    created_at: datetime
    decided_at: datetime | None


# ---------------------------------------------------------------- events


class EventIn(Body):
    name: Text200
    venue: Text200
    starts_at: AwareDatetime
    currency: str = Field(pattern=r"^[A-Z]{3}$")
    description: str | None = Field(default=None, max_length=5000)
    hold_ttl_s: int = Field(default=600, ge=30, le=3600)
    max_tickets_per_customer: int = Field(
        default=DEFAULT_MAX_TICKETS_PER_CUSTOMER,
        ge=0,
        le=100,
        description="tickets one customer may hold and buy (held and sold count alike); "
        "left out: 8; 0: no limit",
    )
    max_held_per_customer: int = Field(
        default=DEFAULT_MAX_HELD_PER_CUSTOMER,
        ge=0,
        le=1000,
        description="places one customer may hold at once, whatever the limit above; "
        "left out: 10; 0: no cap",
    )


class EventPatch(Body):
    name: Text200 | None = None
    venue: Text200 | None = None
    starts_at: AwareDatetime | None = None
    currency: str | None = Field(default=None, pattern=r"^[A-Z]{3}$")
    description: str | None = Field(default=None, max_length=5000)
    hold_ttl_s: int | None = Field(default=None, ge=30, le=3600)
    max_tickets_per_customer: int | None = Field(default=None, ge=0, le=100)
    max_held_per_customer: int | None = Field(default=None, ge=0, le=1000)

    @model_validator(mode="after")
    def no_nulls(self) -> EventPatch:
        nulled = sorted(
            name
            for name in self.model_fields_set
            if getattr(self, name) is None and name != "description"
        )
        if nulled:
            raise ValueError(f"{', '.join(nulled)} cannot be null (only description can)")
        return self


class SeatedSectionIn(Body):
    kind: Literal[SectionKind.SEATED]
    code: SectionCode
    name: Text200
    price_cents: int = Field(ge=0, le=100_000_000)
    rows: int = Field(ge=1, le=500)
    seats_per_row: int = Field(ge=1, le=500)


class GeneralSectionIn(Body):
    kind: Literal[SectionKind.GENERAL]
    code: SectionCode
    name: Text200
    price_cents: int = Field(ge=0, le=100_000_000)
    capacity: int = Field(ge=1, le=200_000)


SectionIn = Annotated[SeatedSectionIn | GeneralSectionIn, Field(discriminator="kind")]


class SectionOut(BaseModel):
    code: str
    name: str
    kind: SectionKind
    price_cents: int
    capacity: int
    rows: int | None = None
    seats_per_row: int | None = None


class EventOut(BaseModel):
    id: str
    organizer_id: uuid.UUID | None
    name: str
    venue: str
    description: str | None
    starts_at: datetime
    currency: str
    status: EventStatus
    hold_ttl_s: int
    max_tickets_per_customer: int
    max_held_per_customer: int
    created_at: datetime
    published_at: datetime | None
    sections: list[SectionOut]


class EventPage(BaseModel):
    items: list[EventOut]
    total: int
    page: int
    size: int


class SectionAvailabilityOut(BaseModel):
    code: str
    kind: SectionKind
    capacity: int
    available: int
    held: int
    sold: int


class AvailabilityOut(BaseModel):
    version: int
    sections: list[SectionAvailabilityOut]


class SeatOut(BaseModel):
    id: str
    status: SeatStatus


class SeatsOut(BaseModel):
    version: int
    seats: list[SeatOut]


# ---------------------------------------------------------------- holds and orders


class HoldIn(Body):
    seats: list[SeatId] | None = Field(default=None, min_length=1, max_length=100)
    section: SectionCode | None = None
    quantity: int | None = Field(default=None, ge=1, le=100)

    @model_validator(mode="after")
    def one_shape(self) -> HoldIn:
        if (self.seats is None) == (self.section is None):
            raise ValueError("give either seats, or a section and a quantity")
        if self.section is not None and self.quantity is None:
            raise ValueError("a general-admission hold needs a quantity")
        if self.seats is not None and self.quantity is not None:
            raise ValueError("a seated hold takes no quantity")
        return self


class HoldOut(BaseModel):
    hold_id: str
    event_id: str
    status: HoldStatus = HoldStatus.HELD
    seats: list[str] | None = None
    section: str | None = None
    quantity: int
    amount_cents: int
    currency: str
    expires_at: datetime


class OrderIn(Body):
    hold_id: str = Field(min_length=1, max_length=128)


class PaymentOut(BaseModel):
    provider: str
    payment_intent_id: str
    client_secret: str | None = None


class OrderItemOut(BaseModel):
    seat: str | None = None
    section: str
    quantity: int
    price_cents: int


class TicketOut(BaseModel):
    id: uuid.UUID
    event_id: str
    seat: str | None = None
    section: str
    status: TicketStatus


class TicketTokenOut(TicketOut):
    """A ticket with the signed token its QR code carries (none once revoked)."""

    token: str | None = None


class TicketList(BaseModel):
    order_id: str
    order_status: OrderStatus
    items: list[TicketTokenOut]


class TicketKeyOut(BaseModel):
    """What a door scanner needs to check tickets offline."""

    event_id: str
    algorithm: Literal["EdDSA"] = "EdDSA"
    key_id: str
    jwk: dict[str, str]
    public_key_pem: str


class CheckInIn(Body):
    token: str = Field(min_length=10, max_length=2048)


class CheckInOut(BaseModel):
    ticket_id: uuid.UUID
    section: str
    seat: str | None = None
    checked_in_at: datetime


class CheckInStatsOut(BaseModel):
    event_id: str
    sold: int
    checked_in: int


class OrderOut(BaseModel):
    order_id: str
    event_id: str
    hold_id: str
    status: OrderStatus
    amount_cents: int | None
    currency: str | None
    created_at: datetime
    expires_at: datetime | None
    confirmed_at: datetime | None = None
    refunded_at: datetime | None = None
    status_reason: str | None = Field(
        default=None, description="why it ended so, e.g. seats_resold for a late payment refunded"
    )
    items: list[OrderItemOut]
    tickets: list[TicketOut] = []
    payment: PaymentOut | None = None


class RefundOut(BaseModel):
    order_id: str
    status: Literal["refund_pending", "refunded"]
    refund_status: str


class OrderList(BaseModel):
    items: list[OrderOut]


class Problem(BaseModel):
    """application/problem+json"""

    type: str
    title: str
    status: int
    detail: str
    code: str
    model_config = ConfigDict(extra="allow")


def problem_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    return {s: {"model": Problem, "content": {"application/problem+json": {}}} for s in statuses}


class AuditEntryOut(BaseModel):
    id: uuid.UUID
    at: datetime
    actor_id: uuid.UUID | None
    actor_role: str | None
    client: str | None
    action: str  # user.role_changed, order.refund, event.status, ticket.checked_in
    subject: str
    detail: dict[str, Any]


# ------------------------------------------------------------- waiting room


class QueueIn(BaseModel):
    """An event's waiting room (its organizer's or an admin's)."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool
    opens_at: AwareDatetime = Field(
        description="when admission starts; joins before it get random places"
    )
    admit_per_minute: Annotated[int, Field(ge=1, le=240_000)] | Literal["auto"] = Field(
        description='admissions a minute, or "auto": more while checkouts are fast, fewer when '
        "they slow down or the inventory runs low"
    )
    max_active: int = Field(ge=1, le=1_000_000, description="admitted buyers shopping at once")
    pass_ttl_s: int = Field(ge=30, le=3600, description="how long a pass lasts unused")
    pre_open_order: Literal["random", "fifo"] = Field(
        default="random",
        description="places of those who join before the open: random (fair) or fifo",
    )


class QueueOut(BaseModel):
    enabled: bool
    opens_at: datetime
    admit_per_minute: int | Literal["auto"]
    max_active: int
    pass_ttl_s: int
    pre_open_order: Literal["random", "fifo"]
    state: Literal["pre_queue", "open", "sold_out", "closed"]
    waiting: int
    active: int
    admission_rate_per_minute: float
    admitted_total: int


class QueuePlaceOut(BaseModel):
    status: Literal["waiting", "admitted", "expired", "none"]
    state: Literal["pre_queue", "open", "sold_out", "closed"]
    ahead: int | None = Field(default=None, description="people ahead of you")
    eta_s: float | None = Field(default=None, description="estimated wait at the current rate")
    waiting: int
    pass_: str | None = Field(
        default=None,
        alias="pass",
        description="the queue pass: send it as Onsale-Queue-Pass with your holds",
    )
    pass_expires_at: datetime | None = None

    model_config = ConfigDict(populate_by_name=True)
