"""onsale on a Redis Cluster: three Valkey masters on loopback (tests/cluster_support.py).

DESIGN rule 5 says the same scripts run on a single Redis and on a cluster,
because every key of an event carries its hash tag. This module shows it:

* The single-Redis suites run again, unchanged, on the cluster: the Lua
  contract, the payment operations and the engine's concurrency races (with
  their negative controls) are imported from their modules and collected here
  too, where the fixtures they ask for (``redis``, ``scripts``, ``client``,
  ``clients``, ``redis_url``) are the cluster's.
* What only a cluster can show: events spread over the shards, each whole on
  one; every script on every shard without CROSSSLOT; the writer collecting
  sales from every shard into Postgres; a rebuild on a shard; the live hub
  hearing every shard on one connection, also after losing it; the API end to
  end (rate limits, idempotency, readiness) on the cluster.

Events are fresh ids, so their Ray actors are created here, with the cluster.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import ray
from redis.asyncio.cluster import RedisCluster
from sqlalchemy.ext.asyncio import AsyncEngine

from api.live import LiveHub
from api.settings import Settings
from engine.client import EngineClient
from engine.model import (
    ConfirmHold,
    ExtendHold,
    HoldQuantity,
    HoldSeats,
    RefundSale,
    ReleaseHold,
)
from engine.redis_client import redis_client
from engine.scripts import OUTBOX_REGISTRY, EventKeys, InventoryScripts
from persistence.rebuild import PostgresRestore
from persistence.writer import OutboxWriter, run_writer
from tests import test_engine_concurrency, test_engine_payments, test_lua_contract
from tests.api_support import on_sale_event, register, running_api, user_with_role
from tests.cluster_support import LocalCluster
from tests.conftest import SMALL_MAP
from tests.sales import counts, published_event, sell, wait_for
from tests.test_lua_contract import loaded, wait_past

pytestmark = pytest.mark.cluster

__all__ = ["loaded"]  # the contract suite's fixture, on this module's ``scripts``

CLIENTS = test_engine_concurrency.CLIENTS


def _adopt(*modules: ModuleType) -> None:
    """Collects the modules' tests again in this module, on its fixtures."""
    for module in modules:
        for name, value in vars(module).items():
            if name.startswith("test_") and callable(value):
                assert name not in globals(), f"two tests named {name}"
                globals()[name] = value


_adopt(test_lua_contract, test_engine_payments, test_engine_concurrency)


# ---------------------------------------------------------------- the cluster


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory, ray_local: str) -> Iterator[LocalCluster]:
    local = LocalCluster(tmp_path_factory.mktemp("cluster"))
    before = {a["name"] for a in ray.util.list_named_actors(all_namespaces=True)}
    try:
        local.start()
        yield local
    finally:
        # The event actors made here are detached and would outlive the
        # cluster, retrying its dead nodes for the rest of the suite.
        for actor in ray.util.list_named_actors(all_namespaces=True):
            if actor["name"] not in before:
                ray.kill(ray.get_actor(actor["name"], namespace=actor["namespace"]))
        local.stop()


@pytest.fixture(scope="module")
async def redis(cluster: LocalCluster) -> AsyncIterator[RedisCluster]:
    client = redis_client(cluster.url, cluster=True, max_connections=2000)  # as conftest's
    assert isinstance(client, RedisCluster)
    await client.initialize()
    yield client
    await client.aclose()


@pytest.fixture(scope="module")
def scripts(redis: RedisCluster) -> InventoryScripts:
    return InventoryScripts(redis)


@pytest.fixture(scope="module")
async def client(
    cluster: LocalCluster, database_url: str, ray_local: str
) -> AsyncIterator[EngineClient]:
    engine = EngineClient(
        cluster.url,
        redis_cluster=True,
        sweep_interval_s=0.2,
        restore=PostgresRestore(database_url),
    )
    yield engine
    await engine.aclose()


@pytest.fixture
async def clients(cluster: LocalCluster, ray_local: str) -> AsyncIterator[list[EngineClient]]:
    made = [EngineClient(cluster.url, redis_cluster=True, window_ms=1.0) for _ in range(CLIENTS)]
    yield made
    for c in made:
        await c.aclose()


@pytest.fixture
def event_id(redis: RedisCluster) -> str:
    """A fresh event; the client's keyless commands (the contract's TIME, the
    negative controls' warm-up PINGs) go to its node, as on a single Redis."""
    fresh = uuid.uuid4().hex[:12]
    redis.set_default_node(redis.get_node_from_key(EventKeys(fresh).meta))
    return fresh


@pytest.fixture
def redis_url(redis: RedisCluster, event_id: str) -> str:
    """For the contract's racers, each a plain client: the node that owns the event."""
    node = redis.get_node_from_key(EventKeys(event_id).meta)
    return f"redis://{node.host}:{node.port}/0"


def events_on_every_node(redis: RedisCluster, per_node: int = 1) -> dict[int, list[str]]:
    """Fresh event ids, ``per_node`` of them owned by each node (by port)."""
    by_port: dict[int, list[str]] = {}
    masters = len(redis.get_primaries())
    while len(by_port) < masters or any(len(ids) < per_node for ids in by_port.values()):
        event_id = uuid.uuid4().hex[:12]
        port = int(redis.get_node_from_key(EventKeys(event_id).meta).port)
        if len(by_port.setdefault(port, [])) < per_node:
            by_port[port].append(event_id)
    return by_port


def owner_port(cluster: LocalCluster, key: str) -> int:
    """Asks the nodes themselves, not the client's map of slots (SCAN lists a
    node's own keys, where EXISTS would only redirect)."""
    holders = [p for p in cluster.ports if any(cluster.node(p).scan_iter(match=key))]
    assert len(holders) == 1, f"{key} on {holders}"
    return holders[0]


def hid() -> str:
    return uuid.uuid4().hex


# ---------------------------------------------------------------- shards


async def test_events_spread_over_the_shards_each_whole_on_one(
    cluster: LocalCluster, redis: RedisCluster, scripts: InventoryScripts
) -> None:
    chosen = events_on_every_node(redis, per_node=2)
    for ids in chosen.values():
        for event_id in ids:
            assert await scripts.load_inventory(event_id, SMALL_MAP)
    for port, ids in chosen.items():
        for event_id in ids:
            keys = EventKeys(event_id)
            assert {owner_port(cluster, k) for k in keys.inventory_keys()} == {port}
    assert len(chosen) == len(cluster.ports) == 3
    assert all(cluster.node(p).dbsize() > 0 for p in cluster.ports)


async def test_every_script_runs_on_every_shard_without_crossslot(
    cluster: LocalCluster, redis: RedisCluster, scripts: InventoryScripts
) -> None:
    for port, (event_id,) in events_on_every_node(redis).items():
        keys = EventKeys(event_id)
        assert await scripts.load_inventory(event_id, SMALL_MAP)  # load_inventory.lua
        assert await scripts.set_status(event_id, "draft") == "on_sale"  # set_status.lua
        assert await scripts.set_status(event_id, "on_sale") == "draft"
        h1, h2, h3, h4, h5 = hid(), hid(), hid(), hid(), hid()
        for command in (  # hold.lua, release.lua, hold.lua, confirm.lua
            HoldSeats(h1, "c1", ("A-1-1",), 60_000),
            ReleaseHold(h1, "c1"),
            HoldSeats(h2, "c2", ("A-1-2",), 60_000),
            ConfirmHold(h2, f"{event_id}-o2", {"amount_cents": 100}),
        ):
            result = (await scripts.apply_one(event_id, command)).results[0]
            assert result["ok"], result
        far_ms = 4_000_000_000_000
        batch = await scripts.apply(  # batch.lua: hold, extend, refund, a short hold
            event_id,
            [
                HoldQuantity(h3, "c3", "FLOOR", 2, 60_000),
                ExtendHold(h3, "c3", far_ms),
                RefundSale(f"{event_id}-o2", h2, ("A-1-2",), None, 1),
                HoldSeats(h4, "c4", ("A-2-1",), 30),
            ],
        )
        assert [r["ok"] for r in batch.results] == [True] * 4, batch.results
        view = await scripts.hold(event_id, h3)  # HGET + TIME of the event's node
        assert view is not None and (view.status, view.expires_at_ms) == ("held", far_ms)
        await wait_past(redis, batch.results[3]["expires_at_ms"])
        swept = await scripts.sweep(event_id)  # sweep.lua
        assert swept.handled == 1
        [piped] = await scripts.apply_one_pipelined(  # the benchmark's pipeline
            event_id, [HoldSeats(h5, "c5", ("A-3-1",), 60_000)]
        )
        assert piped["ok"]
        snapshot = await scripts.snapshot(event_id)  # snapshot.lua
        assert snapshot.seats == {"A-3-1": "held"}
        assert (snapshot.section("FLOOR").held, snapshot.section("A").sold) == (2, 0)
        outbox = await redis.xrange(keys.outbox)
        assert [fields[b"type"] for _, fields in outbox] == [b"order_confirmed", b"order_refunded"]
        assert owner_port(cluster, keys.outbox) == port


# ---------------------------------------------------------------- write-behind


async def test_writer_records_sales_from_every_shard_once(
    db: AsyncEngine,
    client: EngineClient,
    redis: RedisCluster,
    cluster: LocalCluster,
    database_url: str,
) -> None:
    # Only this test's events: the other tests' events have no rows in Postgres.
    await redis.delete(OUTBOX_REGISTRY)
    events = [
        await published_event(db, client, ids[0]) for ids in events_on_every_node(redis).values()
    ]
    assert len({owner_port(cluster, EventKeys(e).meta) for e in events}) == 3
    stop = asyncio.Event()
    writing = asyncio.ensure_future(  # `onsale writer` on the cluster: it polls every stream
        run_writer(cluster.url, database_url, stop, redis_cluster=True, batch_size=50)
    )
    try:
        tickets = dict(
            zip(events, await asyncio.gather(*[sell(client, e, 60) for e in events]), strict=True)
        )

        async def all_written() -> bool:
            return [(await counts(database_url, e))[0] for e in events] == [60] * len(events)

        await wait_for(all_written, 60, "the writer to write every shard's sales")
    finally:
        stop.set()
        await writing
    writer = OutboxWriter(redis, db, batch_size=32)
    assert (await writer.lag()).pending == 0
    for event_id in events:  # redelivered: written once all the same
        for _, fields in await redis.xrange(EventKeys(event_id).outbox, count=5):
            await redis.xadd(EventKeys(event_id).outbox, fields)
    for event_id in events:
        await redis.xadd(
            EventKeys(event_id).outbox,
            {
                "type": "order_confirmed",
                "event_id": event_id,
                "order_id": f"{event_id}-extra",
                "hold_id": f"{event_id}-h-extra",
                "customer_id": "c-extra",
                "seats": "",
                "section": "GA",
                "quantity": "1",
                "confirmed_at_ms": "1790000000000",
                "meta": "{}",
            },
        )
    await writer.drain()
    for event_id in events:
        assert await counts(database_url, event_id) == (61, 61, tickets[event_id] + 1)
    assert (await writer.lag()).pending == 0


async def test_lost_inventory_on_a_shard_is_rebuilt_from_postgres(
    db: AsyncEngine, client: EngineClient, redis: RedisCluster
) -> None:
    await redis.delete(OUTBOX_REGISTRY)
    [ids, *_] = events_on_every_node(redis).values()
    event_id = await published_event(db, client, ids[0])
    await sell(client, event_id, 12)
    await OutboxWriter(redis, db).drain()
    before = await client.snapshot(event_id)
    restores = (await client.actor_stats(event_id))["restores"]
    keys = EventKeys(event_id)
    await redis.unlink(*keys.mutation_keys())  # one slot: one command, on its node
    again = await client.hold_quantity(event_id, "late", "GA", 1, ttl_s=600)  # rebuilds
    assert again.quantity == 1
    after = await client.snapshot(event_id)
    assert {s for s, v in after.seats.items() if v == "sold"} == set(before.seats)
    assert after.section("GA").sold == before.section("GA").sold
    assert (await client.actor_stats(event_id))["restores"] == restores + 1


# ---------------------------------------------------------------- live seat map


async def _next_json(viewer: Any, timeout_s: float = 10) -> dict[str, Any]:
    while True:
        text = await asyncio.wait_for(viewer.next(timeout_s), timeout_s + 1)
        assert text is not None, "no message for the viewer"
        message = json.loads(text)
        if message["type"] in ("snapshot", "delta"):
            return dict(message)


async def _sees_held(viewer: Any, seat: str, within_s: float) -> bool:
    """Reads the viewer's messages until one shows ``seat`` held."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within_s
    while (left := deadline - loop.time()) > 0:
        text = await viewer.next(left)
        if text is not None and _shows_held(json.loads(text), seat):
            return True
    return False


def _shows_held(message: dict[str, Any], seat: str) -> bool:
    if message["type"] == "snapshot":
        return bool(message["seats"].get(seat) == "held")
    return {"seat": seat, "status": "held"} in message.get("changes", [])


async def test_live_hub_hears_every_shard_on_one_connection_and_after_losing_it(
    cluster: LocalCluster, redis: RedisCluster, scripts: InventoryScripts
) -> None:
    events = [ids[0] for ids in events_on_every_node(redis).values()]
    for event_id in events:
        await scripts.load_inventory(event_id, SMALL_MAP)
    hub = LiveHub(redis, scripts.snapshot, tick_s=0.01)
    try:
        async with AsyncExitStack() as stack:
            viewers = [await stack.enter_async_context(hub.watch(e)) for e in events]
            for viewer in viewers:
                assert (await _next_json(viewer))["type"] == "snapshot"
            for event_id in events:
                await scripts.apply_one(event_id, HoldSeats(hid(), "c", ("A-1-1",), 60_000))
            for viewer in viewers:
                assert _shows_held(await _next_json(viewer), "A-1-1")
            # One subscriber connection, on one node; the other shards' PUBLISH reached it.
            subscribed = [p for p in cluster.ports if _subscribers(cluster, p, events)]
            assert len(subscribed) == 1
            assert sum(owner_port(cluster, EventKeys(e).meta) != subscribed[0] for e in events) == 2

            for port in cluster.ports:  # the subscription is lost
                cluster.node(port).client_kill_filter(_type="pubsub")

            async def resubscribed() -> bool:
                return any(_subscribers(cluster, p, events) == len(events) for p in cluster.ports)

            await wait_for(resubscribed, 20, "the hub to subscribe again")
            # What was published while it was away is lost: a viewer learns of
            # it from the next change (a gap, so a snapshot). Change on until
            # every viewer shows the latest change again.
            behind = set(range(len(viewers)))
            for seat in [f"A-{row}-{n}" for row in (2, 3) for n in (1, 2, 3, 4)]:
                for event_id in events:
                    await scripts.apply_one(event_id, HoldSeats(hid(), "c", (seat,), 60_000))
                for i in sorted(behind):
                    if await _sees_held(viewers[i], seat, within_s=1.0):
                        behind.discard(i)
                if not behind:
                    break
            assert not behind, "viewers that never heard their event again"
    finally:
        await hub.aclose()


def _subscribers(cluster: LocalCluster, port: int, events: list[str]) -> int:
    """How many of the events' channels have a subscriber connected to ``port``."""
    channels = [EventKeys(e).channel for e in events]
    counts_by_channel = cluster.node(port).pubsub_numsub(*channels)
    return sum(1 for _, n in counts_by_channel if n > 0)


# ---------------------------------------------------------------- the API


def test_onsale_redis_cluster_names_a_cluster(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ONSALE_REDIS_CLUSTER", raising=False)
    assert Settings().redis_cluster is False
    monkeypatch.setenv("ONSALE_REDIS_CLUSTER", "1")
    assert Settings().redis_cluster is True


async def test_api_on_the_cluster_holds_replays_limits_and_is_ready(
    cluster: LocalCluster,
    database_url: str,
    db: AsyncEngine,
    ray_local: str,
    tmp_path: Path,
) -> None:
    async with running_api(
        "asgi",
        redis_url=cluster.url,
        database_url=database_url,
        data_dir=tmp_path,
        redis_cluster=True,
        rate_limits="holds=3/minute,global=10000/minute",
    ) as api:
        http = api.http
        ready = await http.get("/readyz")
        assert ready.status_code == 200, ready.text
        organizer = await user_with_role(db, http, "organizer")
        event = await on_sale_event(http, organizer)
        buyer = await register(http)
        key = {"Idempotency-Key": uuid.uuid4().hex}
        path, seat = f"/events/{event['id']}/holds", {"seats": ["A-1-1"]}
        first = await http.post(path, json=seat, headers={**buyer.auth, **key})
        assert first.status_code == 201, first.text
        replay = await http.post(path, json=seat, headers={**buyer.auth, **key})
        assert replay.status_code == 201 and replay.headers["idempotent-replayed"] == "true"
        assert replay.json() == first.json()
        hold = await http.get(f"/holds/{first.json()['hold_id']}", headers=buyer.auth)
        assert hold.status_code == 200, hold.text
        second = await http.post(path, json={"seats": ["A-1-2"]}, headers=buyer.auth)
        assert second.status_code == 201, second.text
        limited = await http.post(path, json={"seats": ["A-1-3"]}, headers=buyer.auth)
        assert limited.status_code == 429 and limited.json()["code"] == "rate_limited"
        metrics = await http.get("/metrics")
        assert metrics.status_code == 200 and "onsale_writer_pending_entries" in metrics.text
