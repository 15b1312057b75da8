"""The FastAPI application: REST for buyers, operations endpoints."""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from api.routers import health
from api.settings import Settings, get_settings
from engine import runtime
from engine.client import EngineClient
from persistence.db import create_engine
from persistence.rebuild import PostgresRestore


def create_app(settings: Settings | None = None) -> FastAPI:
    """Builds the app. Redis and Postgres URLs must be set: `onsale up`/`serve`
    start the embedded servers first and pass their URLs down to the workers."""
    settings = settings or get_settings()
    if not settings.redis_url or not settings.database_url:
        raise RuntimeError(
            "ONSALE_REDIS_URL and ONSALE_DATABASE_URL must be set "
            "(use `onsale up` to start the embedded servers)"
        )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        runtime.connect(
            settings.ray_address, object_store_bytes=settings.ray_object_store_mb * 1024 * 1024
        )
        app.state.engine = EngineClient(
            settings.redis_url or "",
            window_ms=settings.batch_window_ms,
            max_batch_ops=settings.batch_max_ops,
            call_timeout_s=settings.engine_timeout_s,
            sweep_interval_s=settings.sweep_interval_s,
            restore=PostgresRestore(settings.database_url or ""),
        )
        app.state.db = create_engine(settings.database_url or "")
        gc.collect()
        gc.freeze()  # start-up objects live for the process: spare the collector
        try:
            yield
        finally:
            await app.state.engine.aclose()
            await app.state.db.dispose()

    app = FastAPI(
        title="onsale",
        version="0.1.0",
        lifespan=lifespan,
        summary="Ticket on-sale engine: holds that never oversell.",
    )
    app.include_router(health.router)
    return app
