"""What the sale finds in Redis without Postgres: the order a PaymentIntent
pays for, the orders still waiting for their money (for reconciliation), and
each buyer's recent orders (so a buyer lists an order before the writer has
written it). Plain keys outside any event's slot, each written by the process
that made the order; none is the record (that is the hold's, in its event's
keys, and Postgres), so a lost key costs a lookup, never a sale.
"""

from __future__ import annotations

import time
from typing import Any

from engine.redis_client import AsyncRedis

INTENT = "onsale:intent:"  # + PaymentIntent id -> order id
AWAITING = "onsale:awaiting-payment"  # zset: order id scored by its payment window's end
RECENT = "onsale:orders-of:"  # + customer id -> zset of order ids scored by creation
SEEN = "onsale:stripe-event:"  # + Stripe event id: handled
KEEP_S = 40 * 24 * 3600  # longer than any payment window, refund or dispute lookup
RECENT_S = 7 * 24 * 3600  # long after the writer has written them
SEEN_S = 4 * 24 * 3600  # Stripe retries a webhook for up to 3 days


async def remember_checkout(
    redis: AsyncRedis,
    *,
    order_id: str,
    customer_id: str,
    intent_id: str | None,
    created_ms: int,
    expires_ms: int,
) -> None:
    recent = RECENT + customer_id
    async with redis.pipeline(transaction=False) as pipe:
        pipe.zadd(recent, {order_id: created_ms})
        pipe.zremrangebyscore(recent, "-inf", created_ms - RECENT_S * 1000)
        pipe.expire(recent, RECENT_S)
        if intent_id:
            pipe.set(INTENT + intent_id, order_id, ex=KEEP_S)
            pipe.zadd(AWAITING, {order_id: expires_ms})
        await pipe.execute()


async def order_of_intent(redis: AsyncRedis, intent_id: str) -> str | None:
    raw: Any = await redis.get(INTENT + intent_id)
    return None if raw is None else raw.decode() if isinstance(raw, bytes) else str(raw)


async def recent_orders(redis: AsyncRedis, customer_id: str, limit: int = 100) -> list[str]:
    raw: Any = await redis.zrevrange(RECENT + customer_id, 0, limit - 1)
    return [r.decode() if isinstance(r, bytes) else str(r) for r in raw]


async def awaiting(redis: AsyncRedis, limit: int) -> list[tuple[str, int]]:
    """Orders still waiting for their money, the soonest window first."""
    raw: Any = await redis.zrange(AWAITING, 0, limit - 1, withscores=True)
    return [(m.decode() if isinstance(m, bytes) else str(m), int(s)) for m, s in raw]


async def settled(redis: AsyncRedis, order_id: str) -> None:
    """Paid, ended or past hope: no longer anyone's to reconcile."""
    await redis.zrem(AWAITING, order_id)


async def already_handled(redis: AsyncRedis, stripe_event: str) -> bool:
    return bool(await redis.exists(SEEN + stripe_event))


async def handled(redis: AsyncRedis, stripe_event: str) -> None:
    await redis.set(SEEN + stripe_event, int(time.time()), ex=SEEN_S)


async def claim(redis: AsyncRedis, order_id: str, seconds: float = 30.0) -> bool:
    """One reconciler at a time per order (several may run), and each order
    looked at once per ``seconds`` by one of them."""
    key = f"onsale:reconciling:{order_id}"
    return bool(await redis.set(key, 1, nx=True, px=max(1, int(seconds * 1000))))
