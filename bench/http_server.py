"""The API as ``onsale serve`` runs it, plus the benchmark's reference route.

``POST /bench/pg-holds`` is a seed-style hold: one Postgres transaction per
request (a guarded stock UPDATE and an INSERT of the hold), the way a
ticketing API without the engine would do it, on the same FastAPI stack,
middleware and worker so that only the hold path differs. Used only by
``onsale bench http``; the production app has no such route.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
from fastapi import FastAPI, Request, status
from pydantic import BaseModel, Field

from api.app import create_app
from api.deps import Customer
from api.errors import ApiError
from bench.pg_baseline import PG_INSERT_HOLD, PG_TAKE_STOCK

BASELINE_RUN = "ONSALE_BENCH_BASELINE_RUN"  # the bench_sections run id to hold from


class BaselineHold(BaseModel):
    section: str = Field(pattern=r"^[A-Za-z][A-Za-z0-9_]{0,31}$")
    quantity: int = Field(ge=1, le=100)


def create_bench_app() -> FastAPI:
    app = create_app()
    run_id = os.environ[BASELINE_RUN]
    inner = app.router.lifespan_context

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with inner(app):
            dsn = app.state.settings.database_url.replace("+asyncpg", "")
            app.state.bench_pool = await asyncpg.create_pool(dsn, min_size=10, max_size=20)
            try:
                yield
            finally:
                await app.state.bench_pool.close()

    app.router.lifespan_context = lifespan

    @app.post("/bench/pg-holds", status_code=status.HTTP_201_CREATED, include_in_schema=False)
    async def pg_hold(body: BaselineHold, user: Customer, request: Request) -> dict[str, Any]:
        hold_id = uuid.uuid4().hex
        async with request.app.state.bench_pool.acquire() as conn, conn.transaction():
            stock = await conn.fetchval(PG_TAKE_STOCK, run_id, body.quantity, body.section)
            if stock is None:
                raise ApiError("sold_out")
            await conn.execute(
                PG_INSERT_HOLD, run_id, hold_id, user.customer_id, body.section, body.quantity
            )
        return {"hold_id": hold_id, "section": body.section, "quantity": body.quantity}

    return app
