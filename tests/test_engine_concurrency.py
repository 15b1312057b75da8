"""Crowds against the engine: real clients racing through Ray into Redis.

Each race runs twice: through the engine, which must never oversell, and
through tests/naive_inventory.py's read-then-write path, which must — proof
that the race is real and the guard is what saves the sale.
"""

from __future__ import annotations

import asyncio
import random
import uuid

import pytest
from redis.asyncio import Redis

from engine.client import EngineClient
from engine.errors import CustomerLimit, EngineError, SeatsUnavailable, SoldOut
from engine.model import GeneralSection, HoldPlaced, SeatedSection
from engine.scripts import InventoryScripts
from tests import naive_inventory as naive

CLIENTS = 4  # independent coalescers, as several API workers would be


@pytest.fixture
async def clients(redis_url: str, ray_local: str) -> list[EngineClient]:
    made = [EngineClient(redis_url, window_ms=1.0) for _ in range(CLIENTS)]
    yield made  # type: ignore[misc]
    for c in made:
        await c.aclose()


async def test_thousand_buyers_for_the_last_seat_exactly_one_wins(
    clients: list[EngineClient], event_id: str
) -> None:
    await clients[0].load_inventory(event_id, [SeatedSection("A", rows=1, seats_per_row=1)])
    results = await asyncio.gather(
        *[
            clients[i % CLIENTS].hold_seats(event_id, f"buyer{i}", ["A-1-1"], ttl_s=60)
            for i in range(1000)
        ],
        return_exceptions=True,
    )
    winners = [r for r in results if isinstance(r, HoldPlaced)]
    losers = [r for r in results if isinstance(r, SeatsUnavailable)]
    assert len(winners) == 1
    assert len(losers) == 999
    snap = await clients[0].snapshot(event_id)
    assert snap.seats == {"A-1-1": "held"} and snap.section("A").held == 1


async def test_negative_control_naive_path_sells_the_last_seat_many_times(
    scripts: InventoryScripts, redis: Redis, event_id: str
) -> None:
    await scripts.load_inventory(event_id, [SeatedSection("A", rows=1, seats_per_row=1)])
    await naive.warm_up(redis, 1000)
    results = await asyncio.gather(
        *[naive.hold_seat(redis, event_id, "A-1-1", f"h{i}") for i in range(1000)]
    )
    assert sum(results) > 1  # without the script's atomicity the seat is oversold


def _quantities(n: int, seed: int) -> list[int]:
    rng = random.Random(seed)
    return [rng.randint(1, 4) for _ in range(n)]


async def test_ten_thousand_general_admission_holds_never_exceed_capacity(
    clients: list[EngineClient], event_id: str
) -> None:
    await clients[0].load_inventory(event_id, [GeneralSection("GA", capacity=5000)])
    quantities = _quantities(10_000, seed=7)
    results = await asyncio.gather(
        *[
            clients[i % CLIENTS].hold_quantity(event_id, f"b{i}", "GA", q, ttl_s=60)
            for i, q in enumerate(quantities)
        ],
        return_exceptions=True,
    )
    held = [r for r in results if isinstance(r, HoldPlaced)]
    refused = [r for r in results if isinstance(r, SoldOut)]
    assert len(held) + len(refused) == 10_000  # every request answered, nothing else
    snap = (await clients[0].snapshot(event_id)).section("GA")
    assert snap.held + snap.sold <= 5000
    assert sum(h.quantity for h in held) == snap.held  # every success accounted for
    assert snap.held > 4990  # and the section really sold out: at most 3 left over


async def test_negative_control_naive_general_admission_oversells(
    scripts: InventoryScripts, redis: Redis, event_id: str
) -> None:
    await scripts.load_inventory(event_id, [GeneralSection("GA", capacity=5000)])
    quantities = _quantities(10_000, seed=7)
    await naive.warm_up(redis, 1000)
    pending = iter(quantities)
    granted = 0

    async def racer() -> None:  # 1,000 racers share the 10,000 requests
        nonlocal granted
        for q in pending:
            if await naive.hold_quantity(redis, event_id, "GA", q):
                granted += q

    await asyncio.gather(*[racer() for _ in range(1000)])
    assert granted > 5000


async def test_customer_limit_holds_under_concurrency(
    clients: list[EngineClient], event_id: str
) -> None:
    await clients[0].load_inventory(event_id, [GeneralSection("GA", 1000)], max_per_customer=4)
    results = await asyncio.gather(
        *[
            clients[i % CLIENTS].hold_quantity(event_id, "greedy", "GA", 1, ttl_s=60)
            for i in range(200)
        ],
        return_exceptions=True,
    )
    assert sum(isinstance(r, HoldPlaced) for r in results) == 4
    assert sum(isinstance(r, CustomerLimit) for r in results) == 196


async def test_negative_control_naive_customer_limit_is_exceeded(
    scripts: InventoryScripts, redis: Redis, event_id: str
) -> None:
    await scripts.load_inventory(event_id, [GeneralSection("GA", 1000)], max_per_customer=4)
    await naive.warm_up(redis, 200)
    ok = await asyncio.gather(
        *[naive.hold_within_limit(redis, event_id, "greedy", 1, limit=4) for _ in range(200)]
    )
    assert sum(ok) > 4


async def test_every_engine_error_carries_a_stable_code(
    clients: list[EngineClient], event_id: str
) -> None:
    await clients[0].load_inventory(event_id, [GeneralSection("GA", 2)])
    with pytest.raises(SoldOut) as sold_out:
        await clients[0].hold_quantity(event_id, "c", "GA", 3, ttl_s=60)
    assert sold_out.value.code == "sold_out" and sold_out.value.context["available"] == 2
    with pytest.raises(EngineError) as unknown:
        await clients[0].hold_seats(event_id, "c", ["GA-1-1"], ttl_s=60)
    assert unknown.value.code == "unknown_seat"
    with pytest.raises(EngineError) as not_found:
        await clients[0].hold_quantity(uuid.uuid4().hex, "c", "GA", 1, ttl_s=60)
    assert not_found.value.code == "event_not_found"
