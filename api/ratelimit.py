"""Rate limits on Redis with the ``limits`` library, shared by every worker.

``ONSALE_RATE_LIMITS`` names them: ``login=5/minute,register=5/hour,
holds=20/minute,global=300/minute`` by default, ``off`` for none (load tests
of the engine itself, and in-process tests, which all come from one
address). login is per client address and email, register (new accounts)
per client address, holds and queue (joining a waiting room, reading one's
place) per user, seats (the whole seat map, the costliest public read) and
live (seat-map WebSocket handshakes) per client address, global per client
address. On a Redis
Cluster (``ONSALE_REDIS_CLUSTER``) the limits live in ``limits``' cluster
storage: each counter is one key, so one slot.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from limits import RateLimitItem, parse
from limits.aio.storage import RedisClusterStorage, RedisStorage
from limits.aio.strategies import MovingWindowRateLimiter

from api.errors import ApiError

NAMES = ("login", "register", "holds", "seats", "live", "queue", "global")
KEY_PREFIX = "onsale:limits"


def parse_limits(spec: str) -> dict[str, RateLimitItem]:
    """``"login=5/minute,holds=20/minute"`` → items; ``"off"`` → none."""
    spec = spec.strip()
    if spec.lower() in ("", "off", "none"):
        return {}
    items: dict[str, RateLimitItem] = {}
    for part in spec.split(","):
        name, _, value = part.partition("=")
        name = name.strip()
        if name not in NAMES or not value:
            raise ValueError(f"ONSALE_RATE_LIMITS: expected name=N/period with names {NAMES}")
        items[name] = parse(value.strip())
    return items


@dataclass
class RateLimiter:
    limits: dict[str, RateLimitItem]
    limiter: MovingWindowRateLimiter | None

    @classmethod
    def from_settings(cls, spec: str, redis_url: str, *, cluster: bool = False) -> RateLimiter:
        items = parse_limits(spec)
        if not items:
            return cls({}, None)
        return cls(items, MovingWindowRateLimiter(_storage(redis_url, cluster)))

    async def hit(self, name: str, *identity: str) -> None:
        """Counts one request; raises 429 ``rate_limited`` when over the limit."""
        item = self.limits.get(name)
        if item is None or self.limiter is None:
            return
        if await self.limiter.hit(item, name, *identity):
            return
        stats = await self.limiter.get_window_stats(item, name, *identity)
        retry_after = max(1, math.ceil(stats.reset_time - time.time()))
        raise ApiError(
            "rate_limited",
            f"limit {item} for {name}; try again in {retry_after} s",
            headers={"Retry-After": str(retry_after)},
            retry_after_s=retry_after,
        )


def _storage(redis_url: str, cluster: bool) -> RedisStorage:
    if not cluster:
        return RedisStorage("async+" + redis_url, implementation="redispy", key_prefix=KEY_PREFIX)
    # limits names a cluster by its nodes (host:port,...), with no database.
    url = urlsplit(redis_url)
    options: dict[str, Any] = {"ssl": True} if url.scheme == "rediss" else {}
    return RedisClusterStorage(
        f"async+redis+cluster://{url.netloc}",
        implementation="redispy",
        key_prefix=KEY_PREFIX,
        **options,
    )
