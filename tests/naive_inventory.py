"""A deliberately non-atomic hold path, for negative controls only.

It does what a hold must never do: read availability in one round trip and
write the hold in another. The concurrency tests run it beside the engine to
show that their races are real: this path oversells under the same load.
"""

from __future__ import annotations

import asyncio

from redis.asyncio import Redis

from engine.scripts import EventKeys


async def warm_up(redis: Redis, connections: int) -> None:
    """Opens the pool's connections first, so the racers' reads really overlap
    instead of queueing behind connection set-up."""
    await asyncio.gather(*[redis.ping() for _ in range(connections)])


async def hold_seat(redis: Redis, event_id: str, seat: str, hold_id: str) -> bool:
    keys = EventKeys(event_id)
    if await redis.hget(keys.seats, seat) != b"a":
        return False
    await redis.hset(keys.seats, seat, f"h:{hold_id}")
    await redis.hincrby(keys.sections, f"{seat.split('-')[0]}:held", 1)
    return True


async def hold_quantity(redis: Redis, event_id: str, section: str, quantity: int) -> bool:
    keys = EventKeys(event_id)
    cap, held, sold = await redis.hmget(
        keys.sections, f"{section}:cap", f"{section}:held", f"{section}:sold"
    )
    if int(cap) - int(held) - int(sold) < quantity:
        return False
    await redis.hincrby(keys.sections, f"{section}:held", quantity)
    return True


async def hold_within_limit(
    redis: Redis, event_id: str, customer: str, quantity: int, limit: int
) -> bool:
    keys = EventKeys(event_id)
    held = int(await redis.hget(keys.customers, f"{customer}:held") or 0)
    if held + quantity > limit:
        return False
    await redis.hincrby(keys.customers, f"{customer}:held", quantity)
    return True
