"""Overload answers 503 with Retry-After, never 500: a worker whose Postgres
pool is full tells the client to come back, rather than fail or queue for ever."""

from __future__ import annotations

import asyncio
from collections import Counter

from sqlalchemy.ext.asyncio import AsyncEngine

from persistence.embedded import free_port
from sales.vocabulary import Role
from tests.api_http import ApiWith
from tests.api_support import minted


async def test_a_postgres_pool_of_two_under_200_requests_sheds_with_503_and_never_500(
    api_with: ApiWith, db: AsyncEngine
) -> None:
    async with api_with(db_pool_size=2, db_pool_overflow=0, db_pool_timeout_s=0.05) as api:
        buyer = await minted(db, api, Role.CUSTOMER)
        answers = await asyncio.gather(
            *(api.http.get("/orders", headers=buyer.auth) for _ in range(200))
        )
        statuses = Counter(r.status_code for r in answers)
        assert set(statuses) <= {200, 503}, statuses
        assert statuses[503] > 0 and statuses[200] > 0, statuses  # the pool did run out
        for shed in (r for r in answers if r.status_code == 503):
            assert shed.headers["content-type"] == "application/problem+json"
            assert shed.json()["code"] == "overloaded"
            assert int(shed.headers["retry-after"]) >= 1
        # and the worker is fine afterwards
        assert (await api.http.get("/orders", headers=buyer.auth)).status_code == 200


async def test_an_unreachable_postgres_is_503_database_unavailable(
    api_with: ApiWith, db: AsyncEngine
) -> None:
    async with api_with() as api:
        buyer = await minted(db, api, Role.CUSTOMER)
    closed = f"postgresql://postgres@127.0.0.1:{free_port()}/postgres"
    async with api_with(database_url=closed) as api:
        r = await api.http.get("/orders", headers=buyer.auth)
        assert r.status_code == 503, r.text
        assert r.json()["code"] == "database_unavailable" and r.headers["retry-after"] == "2"
