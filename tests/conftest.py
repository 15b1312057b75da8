"""Real parts for every test: Redis (embedded Valkey, or ONSALE_TEST_REDIS_URL),
Postgres (embedded, or ONSALE_TEST_DATABASE_URL) and a local Ray."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator

import pytest
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine

from engine import runtime
from engine.client import EngineClient
from engine.model import GeneralSection, SeatedSection
from engine.scripts import InventoryScripts
from persistence import migrate
from persistence.db import create_engine
from persistence.embedded import EmbeddedPostgres, EmbeddedValkey


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
