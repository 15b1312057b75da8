"""EventActor: the single writer of one event's inventory.

One actor per on-sale event, named ``event:<id>``. Every hold, release and
confirmation of the event reaches Redis through this actor's write loop, which
applies everything that queued up meanwhile as one ``batch.lua`` call. The
scripts remain the atomicity boundary: were two actors for one event ever
alive at once, the inventory would still be right, only slower.
"""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import cast

import ray
from ray.actor import ActorHandle

from engine.model import EventStatus, Section
from engine.redis_client import redis_client
from engine.runtime import NAMESPACE
from engine.scripts import EventKeys, InventoryScripts

log = logging.getLogger(__name__)

SWEEP_CALLS_PER_TICK = 8  # bounds how long a burst of expiries delays buyers
MAX_SWEEP_BACKOFF_S = 30.0  # while Redis is unreachable


Restore = Callable[[InventoryScripts, str], Awaitable[bool]]

# The waiting room's admission tick (lua/queue.lua "admit"): where "auto"
# starts, its bounds (admissions a minute), the checkout latency it aims
# under, and the longest gap between ticks that is made up for (an actor
# restart must not admit a burst).
DEFAULT_QUEUE_TICK: dict[str, float] = {
    "auto_start": 600,
    "auto_min": 60,
    "auto_max": 6000,
    "target_ms": 1000,
    "max_gap_ms": 5000,
    # Admissions per tick (about 15 ms of the shard's time); at a tick every
    # 0.5 s, 240,000 a minute at most.
    "max_per_tick": 2000,
}


class EventActor:
    """Applies an event's commands in arrival order, a batch per script call.

    Async actor: calls interleave at ``await``. Only ``_write_loop`` touches
    Redis for mutations, so there is never more than one mutating script of
    this event in flight; ``apply`` only queues and waits.
    """

    def __init__(
        self,
        event_id: str,
        redis_url: str,
        *,
        redis_cluster: bool = False,
        sweep_interval_s: float = 0.5,
        max_batch_ops: int = 1024,
        restore: Restore | None = None,
        queue_tick: dict[str, float] | None = None,
    ) -> None:
        self.event_id = event_id
        # Rebuilds the inventory when Redis has lost it (persistence.rebuild).
        self._restore = restore
        self._redis = redis_client(redis_url, cluster=redis_cluster)
        self._scripts = InventoryScripts(self._redis)
        self._sweep_interval_s = sweep_interval_s
        self._max_batch_ops = max_batch_ops
        self._pending: deque[tuple[str, int, asyncio.Future[tuple[bytes, int]]]] = deque()
        self._wake = asyncio.Event()
        self._loading = asyncio.Lock()  # one load or rebuild of the inventory at a time
        # The waiting room's admission parameters (lua/queue.lua "admit").
        self._queue_tick = json.dumps(queue_tick or DEFAULT_QUEUE_TICK)
        self._stats = {
            "batches": 0,
            "ops": 0,
            "sweeps": 0,
            "swept_holds": 0,
            "restores": 0,
            "admitted": 0,
            "admission_ticks": 0,
        }
        self._writer = asyncio.get_running_loop().create_task(self._write_loop())
        # Everything alive now lives as long as the actor: keep it out of the
        # collector's full passes, which otherwise stall a batch by tens of ms.
        gc.collect()
        gc.freeze()

    async def apply(self, ops_json: str, count: int) -> tuple[bytes, int]:
        """Queues ``count`` commands encoded as a JSON array.

        Returns the batch's undecoded batch.lua reply and the index of this
        call's first result in it: the caller decodes, so the single writer
        spends its time writing.
        """
        future: asyncio.Future[tuple[bytes, int]] = asyncio.get_running_loop().create_future()
        self._pending.append((ops_json, count, future))
        self._wake.set()
        return await future

    async def load_inventory(
        self,
        sections: list[Section],
        status: EventStatus,
        max_per_customer: int,
        max_held_per_customer: int = 0,
    ) -> bool:
        """Loads the seat map once; False if Redis already has it.

        With a restore (the API's actors), an event Postgres already has on
        sale is loaded from Postgres, sales included: a publish that finds
        Redis has lost an event must bring its sold seats back, never lay
        out an empty map beside a rebuild. Interleaves at ``await``; loads,
        like the rebuild at start, hold ``_loading`` so only one runs."""
        async with self._loading:
            if self._restore is not None and await self._rebuild_if_missing():
                return True
            return await self._scripts.load_inventory(
                self.event_id,
                sections,
                status=status,
                max_per_customer=max_per_customer,
                max_held_per_customer=max_held_per_customer,
            )

    async def set_status(self, status: EventStatus) -> EventStatus:
        return await self._scripts.set_status(self.event_id, status)

    async def restore(self) -> bool:
        """Rebuilds the inventory from Postgres if Redis has none (a finished
        event retired by persistence.retire, or a lost Redis); True if it did."""
        return await self._restore_if_missing()

    async def stats(self) -> dict[str, int]:
        return dict(self._stats)

    async def node_id(self) -> str:
        """The Ray node this event lives on (operators: where is my event?)."""
        return str(ray.get_runtime_context().get_node_id())

    async def _restore_if_missing(self) -> bool:
        async with self._loading:
            return await self._rebuild_if_missing()

    async def _rebuild_if_missing(self) -> bool:
        """The inventory from Postgres if Redis has none; hold ``_loading``."""
        if self._restore is None or await self._redis.exists(EventKeys(self.event_id).meta):
            return False
        restored = await self._restore(self._scripts, self.event_id)
        self._stats["restores"] += 1
        log.warning(
            "event %s: inventory was missing from Redis; rebuilt=%s", self.event_id, restored
        )
        return restored

    async def _write_loop(self) -> None:
        try:
            await self._restore_if_missing()
        except Exception:  # retried when a command finds the inventory missing
            log.exception("event %s: rebuild at start failed", self.event_id)
        next_sweep = time.monotonic() + self._sweep_interval_s
        failures = 0
        while True:
            if not self._pending:
                try:
                    await asyncio.wait_for(
                        self._wake.wait(), max(0.0, next_sweep - time.monotonic())
                    )
                except TimeoutError:
                    pass
            self._wake.clear()
            try:
                if self._pending:
                    await self._write_batch()
                if time.monotonic() >= next_sweep:
                    await self._sweep_due()
                    next_sweep = time.monotonic() + self._sweep_interval_s
                failures = 0
            except Exception:  # the loop outlives any one failure; callers got it already
                failures += 1
                if failures <= 3 or failures % 100 == 0:
                    log.exception("event %s: write loop step failed", self.event_id)
                # Redis away: sweep ever less often (commands still run at once).
                # A schedule, not a retry: the loop must keep serving commands
                # meanwhile, so there is no call here for tenacity to wrap.
                next_sweep = time.monotonic() + min(
                    self._sweep_interval_s * 2**failures, MAX_SWEEP_BACKOFF_S
                )

    async def _write_batch(self) -> None:
        taken: list[tuple[str, int, asyncio.Future[tuple[bytes, int]]]] = []
        count = 0
        while self._pending and (not taken or count + self._pending[0][1] <= self._max_batch_ops):
            taken.append(self._pending.popleft())
            count += taken[-1][1]
        # Each caller sent a JSON array; splice their elements into one array.
        ops_json = "[" + ",".join(group[1:-1] for group, _, _ in taken) + "]"
        try:
            reply = await self._scripts.apply_encoded(self.event_id, ops_json)
            if b'"event_not_found"' in reply and await self._restore_if_missing():
                # Nothing of the event existed, so nothing in the batch took
                # effect: apply it again on the rebuilt inventory.
                reply = await self._scripts.apply_encoded(self.event_id, ops_json)
        except Exception as exc:
            for _, _, future in taken:
                if not future.done():
                    future.set_exception(exc)
            raise
        self._stats["batches"] += 1
        self._stats["ops"] += count
        offset = 0
        for _, group_count, future in taken:
            if not future.done():
                future.set_result((reply, offset))
            offset += group_count

    async def _admit_due(self) -> None:
        """One admission tick of the event's waiting room, if it has one: the
        script admits what the rate has earned since the last tick (its state
        is all in Redis, so a new actor carries on where an old one stopped)."""
        tick = await self._scripts.queue(self.event_id, "admit", self._queue_tick)
        if tick.get("admitted"):
            self._stats["admitted"] += int(tick["admitted"])
        if tick.get("state") != "closed":
            self._stats["admission_ticks"] += 1

    async def _sweep_due(self) -> None:
        room = False
        for _ in range(SWEEP_CALLS_PER_TICK):
            swept = await self._scripts.sweep(self.event_id)
            room = room or swept.queue
            self._stats["sweeps"] += 1
            self._stats["swept_holds"] += swept.handled
            if not swept.more:
                break
        if room:  # after the sweep: the places it freed are admitted this tick
            try:
                await self._admit_due()
            except Exception:  # the sweeps go on whatever the waiting room does
                log.exception("event %s: admission tick failed", self.event_id)


_RemoteEventActor = ray.remote(EventActor)


def actor_name(event_id: str) -> str:
    return f"event:{event_id}"


def event_actor(
    event_id: str,
    redis_url: str,
    *,
    redis_cluster: bool = False,
    sweep_interval_s: float = 0.5,
    max_batch_ops: int = 1024,
    restore: Restore | None = None,
    queue_tick: dict[str, float] | None = None,
) -> ActorHandle:
    """The actor of ``event_id``, created if it does not exist yet.

    All actor options live here. Detached, so it outlives the API worker
    that happened to create it; restarted without limit, and calls in flight
    during a restart are retried, which is safe because every command carries
    a caller-made id. ``redis_url`` and ``redis_cluster`` (the URL names a
    Redis Cluster) are those of whoever creates the actor first.
    """
    options = _RemoteEventActor.options(
        name=actor_name(event_id),
        namespace=NAMESPACE,
        get_if_exists=True,
        lifetime="detached",
        max_restarts=-1,
        max_task_retries=-1,
        max_concurrency=1000,
        num_cpus=0,
        # Events spread over the cluster's nodes: with num_cpus=0 Ray would
        # otherwise keep every actor on the node that asked for it first.
        scheduling_strategy="SPREAD",
    )
    handle = options.remote(
        event_id,
        redis_url,
        redis_cluster=redis_cluster,
        sweep_interval_s=sweep_interval_s,
        max_batch_ops=max_batch_ops,
        restore=restore,
        queue_tick=queue_tick,
    )
    return cast(ActorHandle, handle)
