"""Real parts for every test: Redis (embedded Valkey, or ONSALE_TEST_REDIS_URL),
Postgres (embedded, or ONSALE_TEST_DATABASE_URL) and a local Ray."""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import httpx
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
from sales.testmode import EmbeddedStripe, test_key


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


@dataclass(frozen=True)
class LiveApi:
    """`onsale serve` in a subprocess, on the session's Redis, Postgres and Ray,
    with localstripe as its Stripe (webhooks delivered to it over HTTP)."""

    base_url: str
    jwt_secret: str
    data_dir: Path
    stripe_api_base: str
    stripe_key: str
    webhook_secret: str
    redis_url: str  # the server's own Redis database


@pytest.fixture(scope="session")
def localstripe(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedStripe]:
    server = EmbeddedStripe(tmp_path_factory.mktemp("localstripe"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def live_api(
    redis_url: str,
    database_url: str,
    ray_local: str,
    localstripe: EmbeddedStripe,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[LiveApi]:
    migrate.upgrade(database_url)
    # A Redis database of its own: its writer must not meet the outboxes of the
    # engine tests' events, which have no rows in Postgres.
    redis_url = str(urlsplit(redis_url)._replace(path="/1").geturl())
    redis_sync.Redis.from_url(redis_url).flushdb()
    data_dir = tmp_path_factory.mktemp("live-api")
    port = free_port()
    secret = secrets.token_urlsafe(32)
    stripe_key, webhook_secret = test_key(), "whsec_" + secrets.token_hex(16)
    localstripe.register_webhook(f"http://127.0.0.1:{port}/webhooks/stripe", webhook_secret)
    env = {
        **os.environ,
        "ONSALE_REDIS_URL": redis_url,
        "ONSALE_DATABASE_URL": database_url,
        "RAY_ADDRESS": ray_local,
        "ONSALE_PORT": str(port),
        "ONSALE_DATA_DIR": str(data_dir),
        "ONSALE_JWT_SECRET": secret,
        "ONSALE_RATE_LIMITS": "off",
        "ONSALE_LOG_LEVEL": "WARNING",
        "STRIPE_SECRET_KEY": stripe_key,
        "STRIPE_WEBHOOK_SECRET": webhook_secret,
        "ONSALE_STRIPE_API_BASE": localstripe.url,
        "ONSALE_PAYMENT_WINDOW_S": "20",  # short, so a test can see an unpaid hold lapse
    }
    log = (data_dir / "server.log").open("wb")
    server = subprocess.Popen(
        [str(Path(sys.executable).with_name("onsale")), "serve", "--workers", "2"],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    writer = subprocess.Popen(  # confirmed sales reach Postgres, as under `onsale up`
        [str(Path(sys.executable).with_name("onsale")), "writer"],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base_url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert server.poll() is None, (data_dir / "server.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "onsale serve did not become ready"
            try:
                if httpx.get(f"{base_url}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        yield LiveApi(
            base_url, secret, data_dir, localstripe.url, stripe_key, webhook_secret, redis_url
        )
    finally:
        for process in (writer, server):
            process.send_signal(signal.SIGINT)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        log.close()
