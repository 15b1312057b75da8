"""The FastAPI application: REST for buyers and organizers, operations endpoints."""

from __future__ import annotations

import functools
import gc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles
from starlette.types import ASGIApp, Receive, Scope, Send

from api import errors
from api.event_cache import EventCache, Rendered
from api.live import LiveHub
from api.observability import HotRoute, RequestMiddleware, configure_logging, observe_batch
from api.queue_stream import QueueWatch
from api.ratelimit import RateLimiter
from api.routers import admin, auth, events, health, holds, live, orders, queue, tickets, webhooks
from api.security import TokenVersions
from api.settings import Settings, get_settings
from engine import runtime
from engine.client import EngineClient
from engine.redis_client import redis_client
from persistence.db import create_engine
from persistence.rebuild import PostgresRestore
from persistence.secrets import load_or_create_secret
from sales.payments import Payments
from sales.settlement import Settlement
from sales.ticketing import TicketSigner

DESCRIPTION = """
Ticket on-sale engine: holds that never oversell, a live seat map, write-behind
to Postgres. Errors are `application/problem+json` with a stable `code`.

Try it: `POST /auth/register`, then **Authorize** with the access token, pick an
event from `GET /events`, `POST /events/{id}/holds`, then `POST /orders`.
"""


class OnsaleApp(FastAPI):
    """FastAPI with onsale's request middleware in front of everything FastAPI
    adds (its telemetry, routing, middleware and exception handlers): request
    ids, logs and metrics for every request, and the hold route's lean path,
    which never enters FastAPI at all."""

    front: ASGIApp | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        scope["app"] = self
        if self.front is None:
            await super().__call__(scope, receive, send)
        else:
            await self.front(scope, receive, send)


def create_app(settings: Settings | None = None) -> OnsaleApp:
    """Builds the app. Redis and Postgres URLs must be set: `onsale up`/`serve`
    start the embedded servers first and pass their URLs down to the workers."""
    settings = settings or get_settings()
    if not settings.redis_url or not settings.database_url:
        raise RuntimeError(
            "ONSALE_REDIS_URL and ONSALE_DATABASE_URL must be set "
            "(use `onsale up` to start the embedded servers)"
        )
    redis_url, database_url = settings.redis_url, settings.database_url
    configure_logging(settings.log_level)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        runtime.connect(
            settings.ray_address, object_store_bytes=settings.ray_object_store_mb * 1024 * 1024
        )
        state = app.state
        state.settings = settings
        state.jwt_secret = settings.jwt_secret or load_or_create_secret(settings.data_dir)
        state.tickets = TicketSigner.from_settings(settings.ticket_signing_key, settings.data_dir)
        state.redis = redis_client(
            redis_url,
            cluster=settings.redis_cluster,
            pool_size=settings.redis_pool_size,
            pool_timeout_s=settings.redis_pool_timeout_s,
        )
        state.db = create_engine(
            database_url,
            pool_size=settings.db_pool_size,
            max_overflow=settings.db_pool_overflow,
            pool_timeout_s=settings.db_pool_timeout_s,
        )
        state.engine = EngineClient(
            redis_url,
            redis_cluster=settings.redis_cluster,
            window_ms=settings.batch_window_ms,
            max_batch_ops=settings.batch_max_ops,
            call_timeout_s=settings.engine_timeout_s,
            sweep_interval_s=settings.sweep_interval_s,
            restore=PostgresRestore(database_url),
            observer=observe_batch,
            redis_pool_size=settings.redis_pool_size,
            redis_pool_timeout_s=settings.redis_pool_timeout_s,
        )
        state.token_versions = TokenVersions(state.redis, settings.access_token_ttl_s)
        state.limiter = RateLimiter.from_settings(
            settings.rate_limits, redis_url, cluster=settings.redis_cluster
        )
        state.event_cache = EventCache(state.db, state.engine)
        state.rendered = Rendered()
        state.queue_watch = QueueWatch(_room_reader(state.engine))
        state.live = LiveHub(
            state.redis, state.engine.live_snapshot, tick_s=settings.live_tick_ms / 1000
        )
        state.payments = (
            Payments(
                settings.stripe_secret_key,
                settings.stripe_webhook_secret or "",
                settings.stripe_api_base,
                max_concurrent=settings.payments_max_concurrent,
                timeout_s=settings.payments_timeout_s,
            )
            if settings.stripe_secret_key
            else None
        )
        if state.payments is not None:
            state.settlement = Settlement(
                state.db,
                state.engine,
                state.event_cache,
                state.redis,
                state.payments,
                payment_window_s=settings.payment_window_s,
            )
        gc.collect()
        gc.freeze()  # start-up objects live for the process: spare the collector
        try:
            yield
        finally:
            await state.live.aclose()
            await state.engine.aclose()
            await state.redis.aclose()
            await state.db.dispose()

    app = OnsaleApp(
        title="onsale",
        version="0.1.0",
        lifespan=lifespan,
        summary="Ticket on-sale engine: holds that never oversell.",
        description=DESCRIPTION,
    )
    errors.install(app)
    # Routes are matched in order: the hot path (holds) first.
    for module in (holds, health, events, queue, orders, tickets, auth, admin, webhooks, live):
        app.include_router(module.router)
    app.mount("/static", StaticFiles(packages=[("api", "static")]), name="static")
    hot = [
        HotRoute("POST", holds.HOLD_PATH, holds.HOLD_ROUTE, holds.place_hold_asgi),
        HotRoute("GET", events.EVENT_PATH, events.EVENT_ROUTE, events.public_event_asgi),
        HotRoute(
            "GET", events.AVAILABILITY_PATH, events.AVAILABILITY_ROUTE, events.availability_asgi
        ),
    ]
    app.front = RequestMiddleware(
        functools.partial(FastAPI.__call__, app),
        settings.max_body_bytes,
        hot,
        max_header_bytes=settings.max_header_bytes,
        max_in_flight=settings.max_requests_in_flight,
    )
    document_bearer_auth(app)
    return app


def document_bearer_auth(app: FastAPI) -> None:
    """Tells /docs (and schema-driven clients) which operations take a bearer
    token: those that can answer 401. The token itself is read by
    :mod:`api.deps`, without a security dependency on the hot path."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = generate()
            schema.setdefault("components", {})["securitySchemes"] = {
                "bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}
            }
            for operations in schema["paths"].values():
                for operation in operations.values():
                    if "401" in operation.get("responses", {}):
                        operation["security"] = [{"bearer": []}]
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def openapi_document() -> str:
    """docs/openapi.json: the app's schema, as `make openapi` commits it.

    The app is built, never started (its URLs are never dialled). The FastAPI
    and pydantic versions that wrote it are recorded under
    ``info.x-generated-with``: other versions word the same contract a little
    differently, and tests/test_api_contract.py compares accordingly.
    """
    import json
    from importlib.metadata import version

    unused = Settings(
        redis_url="redis://127.0.0.1:1/0", database_url="postgresql://x@127.0.0.1:1/x"
    )
    schema = create_app(unused).openapi()
    schema["info"]["x-generated-with"] = {lib: version(lib) for lib in ("fastapi", "pydantic")}
    return json.dumps(schema, indent=2, sort_keys=True) + "\n"


def _room_reader(engine: EngineClient) -> Any:
    """lua/queue.lua's reads for the waiting-room stream (api.queue_stream)."""

    async def read(event_id: str, action: str, customer: str | None) -> dict[str, Any]:
        return await engine.queue(event_id, action, *([] if customer is None else [customer]))

    return read
