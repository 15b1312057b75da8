"""The one place onsale makes a Redis client: a single Redis (or Valkey), or a Redis Cluster.

DESIGN rule 5 keeps both the same to the scripts: every key of an event
carries the hash tag ``{ev:<id>}`` and every script touches one event's keys,
so on a cluster each call lands on the node of that event's slot. What a
cluster does differently is left to the few callers that must care, through
:func:`is_cluster` and :func:`beside`: reads over many events' streams (one
slot each), keyless commands that must run where a key lives, pub/sub.
"""

from __future__ import annotations

from typing import Any, TypeAlias, TypeGuard

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.cluster import RedisCluster

AsyncRedis: TypeAlias = Redis | RedisCluster


def redis_client(
    url: str,
    *,
    cluster: bool = False,
    pool_size: int | None = None,
    pool_timeout_s: float = 5.0,
    **options: Any,
) -> AsyncRedis:
    """A client for ``url``: with ``cluster``, a Redis Cluster that ``url``
    names one node of (the client discovers the rest and follows MOVED).

    ``pool_size`` (single Redis): at most that many connections, and a request
    beyond them waits for one, where redis-py's default pool would
    fail it at once (a 500 in a spike); after ``pool_timeout_s`` it raises
    ConnectionError("No connection available."), which the API answers 503."""
    if cluster:
        return RedisCluster.from_url(url, **options)
    if pool_size is not None:
        pool = BlockingConnectionPool.from_url(
            url, max_connections=pool_size, timeout=pool_timeout_s, **options
        )
        return Redis.from_pool(pool)  # the client owns the pool: aclose() closes it
    return Redis.from_url(url, **options)


def is_cluster(redis: AsyncRedis) -> TypeGuard[RedisCluster]:
    return isinstance(redis, RedisCluster)


def beside(redis: AsyncRedis, key: str) -> dict[str, Any]:
    """Options that send a keyless command (TIME) to the node holding ``key``,
    so that it reads the same clock as that key's scripts; none on a single Redis."""
    if isinstance(redis, RedisCluster):
        return {"target_nodes": redis.get_node_from_key(key)}
    return {}
