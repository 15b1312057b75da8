"""The buyer's journey when parts fail, against `onsale serve` (real Redis,
Postgres, Ray and localstripe): no payment Stripe took is left unsettled, and
a buyer who paid reads `paid` at once, whatever the write-behind is doing.

(a) the webhook endpoint unreachable: reconciliation settles every payment;
(b) the writer killed mid-sale: orders read paid throughout, and reach
    Postgres when it restarts;
(c) Postgres stopped for 30 s mid-sale: holds, checkouts and payments carry
    on, and nothing is lost.
"""

from __future__ import annotations

import asyncio
import signal
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import pytest
import redis as redis_sync
from sqlalchemy.ext.asyncio import AsyncEngine

from persistence import migrate
from persistence.db import create_engine
from persistence.embedded import EmbeddedPostgres, free_port
from sales.testmode import EmbeddedStripe, pay_with_card, sandbox_key, stripe_client
from sales.vocabulary import Role
from tests.api_support import ONSALE, RunningApi, Served, minted, running_api
from tests.sales import wait_for

pytestmark = pytest.mark.slow

BUYERS = 20


@pytest.fixture
def own_stripe(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedStripe]:
    """A localstripe of this test's own: its one webhook is this test's to point."""
    server = EmbeddedStripe(tmp_path_factory.mktemp("faults-stripe"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


def own_redis(redis_url: str, db: int) -> str:
    url = str(urlsplit(redis_url)._replace(path=f"/{db}").geturl())
    redis_sync.Redis.from_url(url).flushdb()
    return url


def stripe_env(stripe: EmbeddedStripe, key: str, secret: str, ray: str) -> dict[str, str]:
    return {
        "RAY_ADDRESS": ray,
        "STRIPE_SECRET_KEY": key,
        "STRIPE_WEBHOOK_SECRET": secret,
        "ONSALE_STRIPE_API_BASE": stripe.url,
        "ONSALE_RECONCILE_INTERVAL_S": "1",
    }


async def seated_event(api: RunningApi, db: AsyncEngine, seats: int) -> str:
    organizer = await minted(db, api, Role.ORGANIZER)
    event = (await api.http.post("/events", headers=organizer.auth, json={
        "name": "Faults", "venue": "Hall", "starts_at": "2027-06-01T20:00:00Z",
        "currency": "EUR"})).json()  # fmt: skip
    r = await api.http.post(f"/events/{event['id']}/sections", headers=organizer.auth, json={
        "kind": "seated", "code": "A", "name": "Stalls", "price_cents": 5000, "rows": 1,
        "seats_per_row": seats})  # fmt: skip
    assert r.status_code == 201, r.text
    r = await api.http.post(f"/events/{event['id']}/publish", headers=organizer.auth, timeout=60)
    assert r.status_code == 200, r.text
    return str(event["id"])


async def buy(api: RunningApi, event_id: str, seat: str) -> tuple[dict[str, str], dict[str, Any]]:
    """Holds a seat and checks out; returns the buyer's auth and the order."""
    auth = api.bearer(uuid.uuid4())
    hold = await api.http.post(
        f"/events/{event_id}/holds", json={"seats": [seat]}, headers=auth, timeout=60
    )
    assert hold.status_code == 201, hold.text
    order = await api.http.post(
        "/orders", json={"hold_id": hold.json()["hold_id"]}, headers=auth, timeout=60
    )
    assert order.status_code == 201, order.text
    return auth, dict(order.json())


async def pay(stripe: EmbeddedStripe, key: str, order: dict[str, Any]) -> None:
    client = stripe_client(key, stripe.url)
    status = await asyncio.to_thread(pay_with_card, client, order["payment"]["payment_intent_id"])
    assert status == "succeeded", status


async def read_status(api: RunningApi, auth: dict[str, str], order_id: str) -> str:
    r = await api.http.get(f"/orders/{order_id}", headers=auth)
    assert r.status_code == 200, r.text
    return str(r.json()["status"])


async def pg_statuses(database_url: str, order_ids: list[str]) -> dict[str, str]:
    conn = await asyncpg.connect(database_url)
    try:
        rows = await conn.fetch("SELECT id, status FROM orders WHERE id = ANY($1)", order_ids)
    finally:
        await conn.close()
    return {r["id"]: r["status"] for r in rows}


async def test_payments_whose_webhooks_never_arrive_are_settled_by_reconciliation(
    redis_url: str, database_url: str, ray_local: str, db: AsyncEngine,
    own_stripe: EmbeddedStripe, tmp_path: Path,
) -> None:  # fmt: skip
    key, secret = sandbox_key(), "whsec_" + uuid.uuid4().hex
    # Stripe's webhooks go to an address nobody listens on.
    own_stripe.register_webhook(f"http://127.0.0.1:{free_port()}/webhooks/stripe", secret)
    served = Served(workers=1, writer=True, reconcile=True,
                    env=stripe_env(own_stripe, key, secret, ray_local))  # fmt: skip
    async with running_api(
        "serve",
        redis_url=own_redis(redis_url, 5),
        database_url=database_url,
        data_dir=tmp_path,
        served=served,
    ) as api:
        event_id = await seated_event(api, db, BUYERS)
        bought = await asyncio.gather(*(buy(api, event_id, f"A-1-{n + 1}") for n in range(BUYERS)))
        await asyncio.gather(*(pay(own_stripe, key, order) for _, order in bought))

        async def all_paid() -> bool:
            statuses = await asyncio.gather(
                *(read_status(api, auth, order["order_id"]) for auth, order in bought)
            )
            return set(statuses) == {"paid"}

        await wait_for(all_paid, 60, "reconciliation to settle every payment")
        order_ids = [order["order_id"] for _, order in bought]

        async def recorded() -> bool:
            return set((await pg_statuses(database_url, order_ids)).values()) == {"paid"}

        await wait_for(recorded, 60, "the writer to record every sale")
        assert len(await pg_statuses(database_url, order_ids)) == BUYERS


async def test_the_writer_killed_mid_sale_loses_nothing_and_buyers_read_paid_throughout(
    redis_url: str, database_url: str, ray_local: str, db: AsyncEngine,
    own_stripe: EmbeddedStripe, tmp_path: Path,
) -> None:  # fmt: skip
    key, secret = sandbox_key(), "whsec_" + uuid.uuid4().hex
    port = free_port()
    own_stripe.register_webhook(f"http://127.0.0.1:{port}/webhooks/stripe", secret)
    served = Served(workers=1, port=port, env=stripe_env(own_stripe, key, secret, ray_local))
    async with running_api(
        "serve",
        redis_url=own_redis(redis_url, 7),
        database_url=database_url,
        data_dir=tmp_path,
        served=served,
    ) as api:
        writer = await asyncio.create_subprocess_exec(ONSALE, "writer", env=api.env)
        try:
            event_id = await seated_event(api, db, BUYERS)
            bought = await asyncio.gather(*(buy(api, event_id, f"A-1-{n + 1}") for n in range(10)))
            await asyncio.gather(*(pay(own_stripe, key, order) for _, order in bought[:5]))
            writer.send_signal(signal.SIGKILL)  # mid-sale, whatever it was doing
            await writer.wait()
            bought += await asyncio.gather(
                *(buy(api, event_id, f"A-1-{n + 11}") for n in range(10))
            )
            await asyncio.gather(*(pay(own_stripe, key, order) for _, order in bought[5:]))

            async def all_paid() -> bool:
                statuses = await asyncio.gather(
                    *(read_status(api, auth, order["order_id"]) for auth, order in bought)
                )
                return set(statuses) == {"paid"}

            await wait_for(all_paid, 30, "every paid order to read paid with no writer")
            writer = await asyncio.create_subprocess_exec(ONSALE, "writer", env=api.env)
            order_ids = [order["order_id"] for _, order in bought]

            async def recorded() -> bool:
                return set((await pg_statuses(database_url, order_ids)).values()) == {"paid"}

            await wait_for(recorded, 60, "the restarted writer to record every sale")
            conn = await asyncpg.connect(database_url)
            try:
                tickets = await conn.fetchval(
                    "SELECT count(*) FROM tickets WHERE event_id = $1 AND status = 'valid'",
                    event_id,
                )
            finally:
                await conn.close()
            assert tickets == BUYERS  # each sale recorded once
        finally:
            writer.send_signal(signal.SIGINT)
            await asyncio.wait_for(writer.wait(), 30)


@pytest.fixture
async def own_postgres(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[EmbeddedPostgres]:
    server = EmbeddedPostgres(tmp_path_factory.mktemp("faults-pg") / "data", port=free_port())
    server.start()
    migrate.upgrade(server.url)
    try:
        yield server
    finally:
        server.stop()


async def test_sales_and_payments_carry_on_while_postgres_is_stopped_for_30_s(
    redis_url: str, ray_local: str, own_stripe: EmbeddedStripe,
    own_postgres: EmbeddedPostgres, tmp_path: Path,
) -> None:  # fmt: skip
    key, secret = sandbox_key(), "whsec_" + uuid.uuid4().hex
    port = free_port()
    own_stripe.register_webhook(f"http://127.0.0.1:{port}/webhooks/stripe", secret)
    served = Served(workers=1, writer=True, reconcile=True, port=port,
                    env=stripe_env(own_stripe, key, secret, ray_local))  # fmt: skip
    pg = create_engine(own_postgres.url)
    try:
        async with running_api(
            "serve",
            redis_url=own_redis(redis_url, 6),
            database_url=own_postgres.url,
            data_dir=tmp_path,
            served=served,
        ) as api:
            event_id = await seated_event(api, pg, BUYERS)
            own_postgres.stop()
            try:
                stopped_at = asyncio.get_running_loop().time()
                bought = await asyncio.gather(
                    *(buy(api, event_id, f"A-1-{n + 1}") for n in range(BUYERS))
                )
                await asyncio.gather(*(pay(own_stripe, key, order) for _, order in bought))

                async def all_paid() -> bool:
                    statuses = await asyncio.gather(
                        *(read_status(api, auth, order["order_id"]) for auth, order in bought)
                    )
                    return set(statuses) == {"paid"}

                await wait_for(all_paid, 30, "every payment to settle with Postgres away")
                await asyncio.sleep(max(0.0, 30 - (asyncio.get_running_loop().time() - stopped_at)))
            finally:
                own_postgres.start()  # the same port and data
            order_ids = [order["order_id"] for _, order in bought]

            async def recorded() -> bool:
                return set((await pg_statuses(own_postgres.url, order_ids)).values()) == {"paid"}

            await wait_for(recorded, 90, "the writer to catch up once Postgres is back")
            assert len(await pg_statuses(own_postgres.url, order_ids)) == BUYERS
    finally:
        await pg.dispose()
