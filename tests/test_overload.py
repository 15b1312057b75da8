"""Overload answers 503 with Retry-After, never 500: a worker whose Postgres
pool is full tells the client to come back, rather than fail or queue for ever."""

from __future__ import annotations

import asyncio
from collections import Counter

from sqlalchemy.ext.asyncio import AsyncEngine

from persistence.embedded import free_port
from sales.vocabulary import Role
from tests.api_http import ApiWith, held, order, problem
from tests.api_support import minted, on_sale_event


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


async def test_a_payment_provider_that_does_not_answer_is_503_and_the_hold_stays(
    api_with: ApiWith, db: AsyncEngine
) -> None:
    """Stripe's calls are bounded: a provider that accepts connections and
    never answers costs a checkout ``payments_timeout_s``, not a queue without
    end; three buyers at once with one turn between them are all answered
    within about one timeout (the third does not wait for two others' turns)."""
    accepted: list[asyncio.StreamWriter] = []

    async def silent(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(writer)  # read nothing, answer nothing, keep it open

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        async with api_with(
            # by alias: pydantic-settings 2.2 (the lower bound) sets an aliased
            # field by its alias only
            STRIPE_SECRET_KEY="sk_test_" + "x" * 24,
            STRIPE_WEBHOOK_SECRET="whsec_unused",
            stripe_api_base=f"http://127.0.0.1:{port}",
            payments_timeout_s=0.5,
            payments_max_concurrent=1,
        ) as api:
            organizer = await minted(db, api, Role.ORGANIZER)
            event = await on_sale_event(api.http, organizer)
            buyers = [await minted(db, api, Role.CUSTOMER) for _ in range(3)]
            holds = [
                await held(api.http, b, event["id"], seats=[f"A-1-{n + 1}"])
                for n, b in enumerate(buyers)
            ]
            began = asyncio.get_running_loop().time()
            answers = await asyncio.gather(
                *(order(api.http, b, h["hold_id"]) for b, h in zip(buyers, holds, strict=True))
            )
            took = asyncio.get_running_loop().time() - began
            for r in answers:
                assert problem(r, 503, "payments_unavailable")
                assert int(r.headers["retry-after"]) >= 1
            assert took < 1.4, took  # one timeout each, not three turns in a row
            assert accepted  # the provider was asked, and never answered
            for b, h in zip(buyers, holds, strict=True):  # nothing of the checkout stayed
                r = await api.http.get(f"/holds/{h['hold_id']}", headers=b.auth)
                assert r.status_code == 200 and r.json()["status"] == "held", r.text
                assert (await api.http.get("/orders", headers=b.auth)).json()["items"] == []
    finally:
        server.close()
        for writer in accepted:
            writer.close()
