"""Real parts for every test: Redis (embedded Valkey, or ONSALE_TEST_REDIS_URL),
Postgres (embedded, or ONSALE_TEST_DATABASE_URL) and a local Ray."""

from __future__ import annotations

import os
import secrets
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from urllib.parse import urlsplit

import pytest
import redis as redis_sync
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine

from engine import runtime
from engine.client import EngineClient
from engine.model import GeneralSection, SeatedSection
from engine.scripts import InventoryScripts
from persistence import migrate
from persistence.db import create_engine
from persistence.embedded import EmbeddedPostgres, EmbeddedValkey, free_port
from sales.testmode import EmbeddedStripe, sandbox_key
from tests.api_support import RunningApi, Served, running_api

pytest_plugins = ["tests.api_http"]


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    external = os.environ.get("ONSALE_TEST_REDIS_URL")
    if external:
        yield external
        return
    server = EmbeddedValkey(tmp_path_factory.mktemp("valkey"))
    try:
        yield server.start()
    finally:
        server.stop()


@pytest.fixture(scope="session")
def database_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    external = os.environ.get("ONSALE_TEST_DATABASE_URL")
    if external:
        yield external
        return
    server = EmbeddedPostgres(tmp_path_factory.mktemp("pg") / "data")
    try:
        yield server.start()
    finally:
        server.stop()


@pytest.fixture(scope="session")
def ray_local() -> Iterator[str]:
    address = runtime.connect()
    yield address
    runtime.disconnect()


@pytest.fixture(scope="session")
async def redis(redis_url: str) -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_url, max_connections=2000)
    yield client
    await client.aclose()


@pytest.fixture(scope="session")
async def scripts(redis: Redis) -> InventoryScripts:
    return InventoryScripts(redis)


@pytest.fixture(scope="session")
async def client(redis_url: str, ray_local: str) -> AsyncIterator[EngineClient]:
    engine_client = EngineClient(redis_url, sweep_interval_s=0.2)
    yield engine_client
    await engine_client.aclose()


@pytest.fixture
def event_id() -> str:
    return uuid.uuid4().hex[:12]


SMALL_MAP = [SeatedSection("A", rows=3, seats_per_row=4), GeneralSection("FLOOR", capacity=20)]


@pytest.fixture(scope="session")
async def db(database_url: str) -> AsyncIterator[AsyncEngine]:
    migrate.upgrade(database_url)
    sql = create_engine(database_url)
    yield sql
    await sql.dispose()


@dataclass
class LiveApi(RunningApi):
    """`onsale serve --workers 2` and `onsale writer` in subprocesses, on the
    session's Redis (a database of its own), Postgres and Ray, with
    localstripe as its Stripe (webhooks delivered to it over HTTP)."""

    stripe_api_base: str = ""
    stripe_key: str = ""
    webhook_secret: str = ""
    redis_url: str = ""  # the server's own Redis database


@pytest.fixture(scope="session")
def localstripe(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedStripe]:
    server = EmbeddedStripe(tmp_path_factory.mktemp("localstripe"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
async def live_api(
    redis_url: str,
    database_url: str,
    ray_local: str,
    db: AsyncEngine,
    localstripe: EmbeddedStripe,
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[LiveApi]:
    # A Redis database of its own: its writer must not meet the outboxes of the
    # engine tests' events, which have no rows in Postgres.
    own_redis = str(urlsplit(redis_url)._replace(path="/1").geturl())
    redis_sync.Redis.from_url(own_redis).flushdb()
    port = free_port()  # the webhook's address is known before the server starts
    stripe_key, webhook_secret = sandbox_key(), "whsec_" + secrets.token_hex(16)
    localstripe.register_webhook(f"http://127.0.0.1:{port}/webhooks/stripe", webhook_secret)
    served = Served(
        workers=2,
        writer=True,
        port=port,
        env={
            "RAY_ADDRESS": ray_local,
            "STRIPE_SECRET_KEY": stripe_key,
            "STRIPE_WEBHOOK_SECRET": webhook_secret,
            "ONSALE_STRIPE_API_BASE": localstripe.url,
        },
    )
    async with running_api(
        "serve",
        redis_url=own_redis,
        database_url=database_url,
        data_dir=tmp_path_factory.mktemp("live-api"),
        served=served,
        payment_window_s=20,  # short, so a test can see an unpaid hold lapse
    ) as api:
        yield LiveApi(
            **vars(api),
            stripe_api_base=localstripe.url,
            stripe_key=stripe_key,
            webhook_secret=webhook_secret,
            redis_url=own_redis,
        )


@pytest.fixture(scope="session")
async def inproc(
    redis_url: str,
    database_url: str,
    ray_local: str,
    db: AsyncEngine,
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[RunningApi]:
    """The app in this process (ASGI transport), rate limits off, shared by the
    API tests that need no settings of their own; ``db`` migrates first."""
    async with running_api(
        "asgi",
        redis_url=redis_url,
        database_url=database_url,
        data_dir=tmp_path_factory.mktemp("inproc-api"),
    ) as api:
        yield api
