"""`onsale bench queue`: one event's waiting room with a million people in it.

On a fresh embedded Valkey, ``--waiting`` accounts join one event's room
before the open, through the engine's script (lua/queue.lua) as the API calls
it, in pipelines of 100 with ``--concurrency`` pipelines in flight. It prints the join
throughput, Redis's memory for the room (``used_memory`` before and after,
and ``MEMORY USAGE`` of its keys), the time of ``me`` (where one buyer stands,
a random one each time) and of an admission tick (the actor's call) at the
organizer's rate and at a burst of ``--burst`` admissions, and the time of
``state`` (what the WebSocket reads once a tick per event and worker).
"""

from __future__ import annotations

import argparse
import asyncio
import random
import secrets
import statistics
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from redis.asyncio import Redis
from rich.console import Console
from rich.table import Table

from engine.actor import DEFAULT_QUEUE_TICK
from engine.model import GeneralSection
from engine.scripts import EventKeys, InventoryScripts
from persistence.embedded import EmbeddedValkey

RES = 2**53
PIPELINE = 100  # joins per round trip, as many clients' joins arriving together


async def used(redis: Redis) -> int:
    return int((await redis.info("memory"))["used_memory"])


def ms(samples: list[float]) -> tuple[float, float]:
    samples = sorted(samples)
    p99 = samples[min(len(samples) - 1, int(len(samples) * 0.99))]
    return statistics.median(samples) * 1000, p99 * 1000


async def run(redis: Redis, waiting: int, concurrency: int, burst: int) -> dict[str, Any]:
    scripts = InventoryScripts(redis)
    event_id = uuid.uuid4().hex[:12]
    keys = EventKeys(event_id)
    await scripts.load_inventory(event_id, [GeneralSection("GA", 1_000_000)])
    now = int(time.time() * 1000)
    room = {"on": True, "opens_at": now + 3_600_000, "order": "random", "apm": 1200,
            "max_active": 10_000_000, "pass_ttl_ms": 600_000}  # fmt: skip
    await scripts.queue(event_id, "configure", room)
    before = await used(redis)
    next_one = 0

    async def joiner() -> None:
        nonlocal next_one
        while next_one < waiting:
            first = next_one
            next_one = min(waiting, next_one + PIPELINE)
            joins = [(f"c{n:07d}", secrets.randbelow(RES) / RES) for n in range(first, next_one)]
            await scripts.queue_join_many(event_id, joins)

    began = time.perf_counter()
    await asyncio.gather(*(joiner() for _ in range(concurrency)))
    join_s = time.perf_counter() - began
    after = await used(redis)
    usage = {
        key: int(await redis.memory_usage(key) or 0)
        for key in (keys.queue, keys.waiting, keys.passes, keys.active)
    }

    me_times = []
    for _ in range(1000):
        customer = f"c{random.randrange(waiting):07d}"
        t = time.perf_counter()
        await scripts.queue(event_id, "me", customer)
        me_times.append(time.perf_counter() - t)
    state_times = []
    for _ in range(200):
        t = time.perf_counter()
        await scripts.queue(event_id, "state")
        state_times.append(time.perf_counter() - t)

    await scripts.queue(event_id, "configure", {**room, "opens_at": int(time.time() * 1000)})
    tick_times = []
    for _ in range(200):  # the organizer's rate: a tick every 0.5 s admits 10
        await asyncio.sleep(0.005)
        t = time.perf_counter()
        await scripts.queue(event_id, "admit", DEFAULT_QUEUE_TICK)
        tick_times.append(time.perf_counter() - t)
    await scripts.queue(event_id, "configure", {**room, "opens_at": 0, "apm": burst * 12})
    await redis.hset(keys.queue, "last", int(time.time() * 1000) - 5000)  # 5 s earned
    t = time.perf_counter()
    burst_tick = await scripts.queue(
        event_id, "admit", {**DEFAULT_QUEUE_TICK, "max_per_tick": burst}
    )
    burst_s = time.perf_counter() - t
    return {
        "waiting": waiting,
        "join_s": join_s,
        "joins_per_s": waiting / join_s,
        "memory_bytes": after - before,
        "usage": usage,
        "me_ms": ms(me_times),
        "state_ms": ms(state_times),
        "tick_ms": ms(tick_times),
        "burst": int(burst_tick["admitted"]),
        "burst_ms": burst_s * 1000,
    }


def _p50_p99(pair: tuple[float, float]) -> str:
    return f"{pair[0]:.2f} / {pair[1]:.2f} ms"


def report(r: dict[str, Any], console: Console) -> None:
    table = Table(title=f"A waiting room with {r['waiting']:,} people (embedded Valkey)")
    table.add_column("figure")
    table.add_column("value", justify="right")
    table.add_row(
        "joins, through lua/queue.lua", f"{r['joins_per_s']:,.0f}/s ({r['join_s']:.1f} s)"
    )
    table.add_row("Redis used_memory for the room", f"{r['memory_bytes'] / 2**20:,.1f} MiB "
                  f"({r['memory_bytes'] / r['waiting']:.0f} B a person)")  # fmt: skip
    for key, size in r["usage"].items():
        table.add_row(f"  MEMORY USAGE {key.split('}:', 1)[1]}", f"{size / 2**20:,.2f} MiB")
    table.add_row("me (one buyer's place), p50 / p99", "{:.2f} / {:.2f} ms".format(*r["me_ms"]))
    table.add_row(
        "state (a tick of the live stream), p50 / p99", "{:.2f} / {:.2f} ms".format(*r["state_ms"])
    )
    table.add_row(
        "admission tick at 1,200/min, p50 / p99", "{:.2f} / {:.2f} ms".format(*r["tick_ms"])
    )
    table.add_row(f"one tick admitting {r['burst']:,}", f"{r['burst_ms']:.1f} ms")
    console.print(table)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="onsale bench queue", description=__doc__)
    parser.add_argument("--waiting", type=int, default=1_000_000)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--burst", type=int, default=10_000)
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory() as tmp:
        valkey = EmbeddedValkey(Path(tmp) / "valkey")
        url = valkey.start()
        try:

            async def go() -> dict[str, Any]:
                redis = Redis.from_url(url)
                try:
                    return await run(redis, args.waiting, args.concurrency, args.burst)
                finally:
                    await redis.aclose()

            figures = asyncio.run(go())
        finally:
            valkey.stop()
    report(figures, Console())
    return 0
