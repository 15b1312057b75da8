"""onsale's one Settings object, read from the environment (names in docs/API.md)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="ONSALE_", extra="ignore")

    data_dir: Path = Path(".onsale")
    redis_url: str | None = None  # None: start embedded Valkey in data_dir
    redis_cluster: bool = False  # redis_url names one node of a Redis Cluster
    database_url: str | None = None  # None: start embedded Postgres in data_dir
    ray_address: str | None = Field(
        default=None, validation_alias=AliasChoices("RAY_ADDRESS", "ONSALE_RAY_ADDRESS")
    )
    ray_object_store_mb: int = 128
    host: str = "127.0.0.1"
    port: int = 8000
    # How long an idle HTTP connection is kept open for the client's next
    # request: longer than clients and load balancers keep theirs (60 s).
    keep_alive_s: int = Field(default=75, ge=1, le=3600)

    # Engine client: coalescing window and size, per-call timeout, sweep period.
    batch_window_ms: float = 1.5
    batch_max_ops: int = 256
    engine_timeout_s: float = 5.0
    sweep_interval_s: float = 0.5

    # Connection pools of each API worker. A request that finds every
    # connection busy waits this long, then answers 503 `overloaded` with
    # Retry-After rather than queueing without end.
    db_pool_size: int = Field(default=10, ge=1)
    db_pool_overflow: int = Field(default=10, ge=0)
    db_pool_timeout_s: float = Field(default=2.0, gt=0)
    redis_pool_size: int = Field(default=200, ge=1)
    redis_pool_timeout_s: float = Field(default=2.0, gt=0)

    # Outbox writer: entries per Postgres transaction; consumers per writer
    # process (one writes while another waits on Postgres); how long an entry may
    # sit unacknowledged with another consumer before this one takes it over.
    writer_batch_size: int = 500
    writer_consumers: int = Field(default=2, ge=1)
    writer_reclaim_idle_ms: int = 10_000
    # A closed or cancelled event that started this long ago has its
    # inventory (seat map, hold records, per-buyer counters, refund markers)
    # taken out of Redis by the writer, which looks this often; anything that
    # touches the event again rebuilds it from Postgres (persistence.retire).
    retire_after_s: float = Field(default=7 * 24 * 3600, ge=0)
    retire_interval_s: float = Field(default=600.0, gt=0)

    # Auth: the HS256 key (None: generated into data_dir), token lifetimes.
    jwt_secret: str | None = None
    access_token_ttl_s: int = 15 * 60
    refresh_token_ttl_s: int = 30 * 24 * 3600

    # the names of api.ratelimit, each name=N/period; or "off".
    rate_limits: str = (
        "login=5/minute,register=5/hour,holds=20/minute,seats=60/minute,live=30/minute,queue=60/minute,"
        "global=300/minute"
    )
    max_body_bytes: int = 64 * 1024
    # /metrics: with a token, for callers that send it as a bearer token;
    # without, for loopback and private addresses only.
    metrics_token: str | None = None
    # All of a request's headers together, and the requests one worker serves
    # at once (WebSockets apart); past either, the API's own problem+json:
    # 431 headers_too_large, 503 overloaded with Retry-After.
    max_header_bytes: int = Field(default=16 * 1024, ge=1024)
    max_requests_in_flight: int = Field(default=2000, ge=1)
    events_cache_s: int = 60
    # Tickets: the Ed25519 private key (PEM, PKCS#8) that signs them; None:
    # generated into data_dir.
    ticket_signing_key: str | None = None
    # Live seat map: changes heard within one tick go out as one delta.
    live_tick_ms: float = Field(default=50, gt=0, le=100)
    # Seat-map sockets one address may hold open on one worker at once, and
    # the browser origins allowed to open them ("*": any; empty: only pages
    # served by this host). Clients that send no Origin are not browsers.
    live_max_per_address: int = Field(default=50, ge=1)
    live_allowed_origins: str = ""
    log_level: str = "INFO"

    # Payments. No STRIPE_SECRET_KEY: `onsale up` starts localstripe on loopback
    # and fills these in (test mode, offline). STRIPE_WEBHOOK_SECRET verifies
    # Stripe-Signature; the payment window bounds how long a hold is kept for
    # an order awaiting payment.
    stripe_secret_key: str | None = Field(
        default=None, validation_alias=AliasChoices("STRIPE_SECRET_KEY", "ONSALE_STRIPE_SECRET_KEY")
    )
    stripe_webhook_secret: str | None = Field(
        default=None,
        validation_alias=AliasChoices("STRIPE_WEBHOOK_SECRET", "ONSALE_STRIPE_WEBHOOK_SECRET"),
    )
    stripe_api_base: str | None = None
    payment_window_s: int = Field(default=900, ge=10, le=3600)
    # A refund claimed for longer than this (its request died before Stripe
    # answered) may be asked again; the door refuses its tickets meanwhile.
    refund_claim_s: float = Field(default=300, gt=0)
    # Calls to Stripe at once per process, and how long one may take, before
    # checkout answers 503 payments_unavailable with Retry-After.
    payments_max_concurrent: int = Field(default=32, ge=1)
    payments_timeout_s: float = Field(default=10.0, gt=0)
    # Orders still waiting for their money are checked with Stripe this often
    # (`onsale reconcile`), in case a webhook never came.
    reconcile_interval_s: float = Field(default=30.0, gt=0)
    # How long after its payment window an unpaid order's PaymentIntent is
    # left payable (a late payment still buys the seats if they are free),
    # before reconciliation cancels it so that it can never be taken unsettled.
    reconcile_grace_s: float = Field(default=3600.0, ge=0)


@lru_cache
def get_settings() -> Settings:
    return Settings()
