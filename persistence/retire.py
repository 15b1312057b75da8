"""Retiring finished events' inventories from Redis.

While an event is on sale its inventory in Redis grows with its sale: a hold
record per hold (forgotten a day after it ends), and for good a sold and held
counter per buyer (the per-customer limit) and a marker per refunded order
(so that a retried refund stays a replay). Once the event is closed or
cancelled and started ``after_s`` ago, the writer takes the whole inventory
out (lua/retire.lua, which also waits for the outbox to be written and every
hold to be gone), so that Redis holds what is on sale, not every sale ever.

Nothing is lost by it: Postgres has every sale and refund by then, and the
event's actor rebuilds the inventory from Postgres (persistence.rebuild)
whenever something touches the event again, as after a lost Redis: a late
payment, an organizer's refund, a reader of the seat map.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from engine.outbox import OUTBOX_REGISTRY
from engine.redis_client import AsyncRedis
from engine.scripts import InventoryScripts
from persistence.models import Event
from sales.vocabulary import EventStatus

log = logging.getLogger(__name__)

FINISHED = (EventStatus.CLOSED, EventStatus.CANCELLED)


def _event_of(stream: bytes | str) -> str | None:
    """``{ev:<id>}:outbox`` -> ``<id>``."""
    name = stream.decode() if isinstance(stream, bytes) else stream
    if name.startswith("{ev:") and name.endswith("}:outbox"):
        return name[len("{ev:") : -len("}:outbox")]
    return None


async def retire_finished(
    redis: AsyncRedis,
    db: AsyncEngine,
    *,
    after_s: float,
    now: datetime | None = None,
    scripts: InventoryScripts | None = None,
) -> list[str]:
    """Retires every loaded event Postgres has closed or cancelled and that
    started ``after_s`` before ``now``; returns the ids retired. Safe to run
    in several processes at once: each retirement is one script."""
    members: Any = await redis.smembers(OUTBOX_REGISTRY)
    loaded = sorted(e for e in map(_event_of, members) if e)
    if not loaded:
        return []
    cutoff = (now or datetime.now(UTC)) - timedelta(seconds=after_s)
    async with db.connect() as conn:
        finished = (
            await conn.execute(
                select(Event.id).where(
                    Event.id.in_(loaded),
                    Event.status.in_([str(s) for s in FINISHED]),
                    Event.starts_at <= cutoff,
                )
            )
        ).scalars()
        finished_ids = sorted(finished)
    scripts = scripts or InventoryScripts(redis)
    retired = []
    for event_id in finished_ids:
        why = await scripts.retire(event_id)
        if why is None:
            retired.append(event_id)
            log.info("event %s: finished; its inventory left Redis", event_id)
        else:
            log.info("event %s: finished, its inventory stays for now (%s)", event_id, why)
    return retired


async def retire_periodically(
    redis: AsyncRedis,
    db: AsyncEngine,
    stop: asyncio.Event,
    *,
    after_s: float,
    interval_s: float,
) -> None:
    """`retire_finished` every ``interval_s`` until ``stop`` (the writer runs it)."""
    scripts = InventoryScripts(redis)
    while not stop.is_set():
        try:
            await retire_finished(redis, db, after_s=after_s, scripts=scripts)
        except Exception:  # Redis or Postgres away: the next round tries again
            log.exception("retiring finished events failed")
        try:
            await asyncio.wait_for(stop.wait(), interval_s)
        except TimeoutError:
            pass
