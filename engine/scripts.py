"""Typed wrappers around the Lua scripts in ``lua/``.

Each script is registered once per Redis client with ``register_script``
(EVALSHA, reloaded by redis-py on NOSCRIPT; on a Redis Cluster the call goes
to the node of its keys' slot, and SCRIPT LOAD to every primary). Nothing else
in onsale sends Lua to Redis: callers use :class:`InventoryScripts`.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any

from redis.asyncio.cluster import RedisCluster

from engine.errors import InvalidInventory, error_from_code
from engine.model import (
    Command,
    EventStatus,
    HoldView,
    Section,
    SectionAvailability,
    SectionKind,
    Snapshot,
)
from engine.outbox import OUTBOX_REGISTRY
from engine.redis_client import AsyncRedis, beside


def _lua(name: str) -> str:
    return resources.files("lua").joinpath(name).read_text(encoding="utf-8")


# Events whose waiting room is on (for /metrics). Not an event key: on a
# cluster it lives in a slot of its own.
QUEUE_REGISTRY = "onsale:queues"


@dataclass(frozen=True)
class EventKeys:
    """The key layout of one event; every key carries the hash tag ``{ev:<id>}``."""

    event_id: str

    @property
    def tag(self) -> str:
        return f"{{ev:{self.event_id}}}"

    @property
    def meta(self) -> str:
        return f"{self.tag}:meta"

    @property
    def seats(self) -> str:
        return f"{self.tag}:seats"

    @property
    def sections(self) -> str:
        return f"{self.tag}:sections"

    @property
    def holds(self) -> str:
        return f"{self.tag}:holds"

    @property
    def expiries(self) -> str:
        return f"{self.tag}:expiries"

    @property
    def customers(self) -> str:
        return f"{self.tag}:customers"

    @property
    def outbox(self) -> str:
        return f"{self.tag}:outbox"

    @property
    def passes(self) -> str:
        """The waiting room's admissions: customer -> "<nonce>:<expiry ms>"."""
        return f"{self.tag}:q:passes"

    @property
    def active(self) -> str:
        """Admitted customers scored by when their place in the sale ends."""
        return f"{self.tag}:q:active"

    @property
    def queue(self) -> str:
        """The waiting room's settings and state (hash)."""
        return f"{self.tag}:q"

    @property
    def waiting(self) -> str:
        """Who waits, scored by their place (zset; lowest first)."""
        return f"{self.tag}:q:waiting"

    def queue_keys(self) -> list[str]:
        """KEYS of lua/queue.lua, in its order."""
        return [self.meta, self.sections, self.queue, self.waiting, self.passes, self.active]

    @property
    def channel(self) -> str:
        return f"{self.tag}:changes"

    @property
    def card(self) -> str:
        """The event as the public reads show it (written by sales.catalog)."""
        return f"{self.tag}:card"

    def mutation_keys(self) -> list[str]:
        """KEYS for every script built on lua/lib.lua, in lib.lua's order."""
        return [
            self.meta,
            self.seats,
            self.sections,
            self.holds,
            self.expiries,
            self.customers,
            self.outbox,
            self.passes,
            self.active,
        ]

    def inventory_keys(self) -> list[str]:
        return [self.meta, self.seats, self.sections]


@dataclass(frozen=True)
class BatchResult:
    version: int
    results: list[dict[str, Any]]


@dataclass(frozen=True)
class SweepResult:
    version: int
    handled: int
    more: bool
    queue: bool = False  # the event's waiting room is on


class InventoryScripts:
    """The engine's Redis operations, one method per script."""

    def __init__(self, redis: AsyncRedis) -> None:
        self.redis = redis
        lib = _lua("lib.lua")
        self._load = redis.register_script(_lua("load_inventory.lua"))
        self._snapshot = redis.register_script(_lua("snapshot.lua"))
        self._set_status = redis.register_script(_lua("set_status.lua"))
        self._batch = redis.register_script(lib + _lua("batch.lua"))
        self._hold = redis.register_script(lib + _lua("hold.lua"))
        self._release = redis.register_script(lib + _lua("release.lua"))
        self._confirm = redis.register_script(lib + _lua("confirm.lua"))
        self._sweep = redis.register_script(lib + _lua("sweep.lua"))
        self._retire = redis.register_script(_lua("retire.lua"))
        self._queue = redis.register_script(_lua("queue.lua"))
        self._single = {"hold": self._hold, "release": self._release, "confirm": self._confirm}

    async def load_inventory(
        self,
        event_id: str,
        sections: Sequence[Section],
        *,
        status: EventStatus = EventStatus.ON_SALE,
        max_per_customer: int = 0,
        sold: dict[str, Any] | None = None,
        max_held_per_customer: int = 0,
    ) -> bool:
        """Loads the seat map once; returns False if it was already loaded.

        ``sold`` marks what Postgres already recorded, and the refunds already
        made, when rebuilding (see lua/load_inventory.lua for its shape).
        """
        keys = EventKeys(event_id)
        wire = json.dumps([s.to_wire() for s in sections])
        raw = json.loads(
            await self._load(
                keys=[*keys.inventory_keys(), keys.customers, keys.holds, keys.queue],
                args=[
                    event_id,
                    str(status),
                    max_per_customer,
                    wire,
                    json.dumps(sold or {}),
                    max_held_per_customer,
                ],
            )
        )
        if not raw["ok"]:
            raise InvalidInventory(raw.get("detail"))
        await self.redis.sadd(OUTBOX_REGISTRY, keys.outbox)
        return bool(raw["loaded"])

    async def set_status(self, event_id: str, status: EventStatus) -> EventStatus:
        """Sets the sale status; returns the previous one."""
        raw = json.loads(
            await self._set_status(keys=[EventKeys(event_id).meta], args=[str(status)])
        )
        if not raw["ok"]:
            raise error_from_code(raw["code"], detail=raw.get("detail"))
        return EventStatus(raw["previous"])

    async def apply(self, event_id: str, commands: Sequence[Command]) -> BatchResult:
        """Applies commands in order in one script call; one result each."""
        wire = json.dumps([c.to_wire() for c in commands])
        raw = json.loads(await self.apply_encoded(event_id, wire))
        return BatchResult(version=int(raw["version"]), results=list(raw["results"]))

    async def apply_encoded(self, event_id: str, ops_json: str) -> bytes:
        """batch.lua on an already encoded JSON array; returns the reply undecoded.

        The actor's hot path: it neither decodes what callers sent nor what
        Redis answered, it only joins and forwards.
        """
        keys = EventKeys(event_id)
        return bytes(await self._batch(keys=keys.mutation_keys(), args=[keys.channel, ops_json]))

    async def apply_one(self, event_id: str, command: Command) -> BatchResult:
        """One command through its own script (hold.lua, release.lua, confirm.lua)."""
        keys = EventKeys(event_id)
        wire = command.to_wire()
        raw = json.loads(
            await self._single[wire["op"]](
                keys=keys.mutation_keys(), args=[keys.channel, json.dumps(wire)]
            )
        )
        return BatchResult(version=int(raw["version"]), results=list(raw["results"]))

    async def apply_one_pipelined(
        self, event_id: str, commands: Sequence[Command]
    ) -> list[dict[str, Any]]:
        """Each command through its single-operation script, all in one pipeline.

        No batching inside Redis: one script call per command. The benchmark
        uses it as the raw ceiling the actor path is measured against.
        """
        if isinstance(self.redis, RedisCluster):
            # redis-py refuses EVALSHA in a cluster pipeline: all at once instead.
            results = await asyncio.gather(*[self.apply_one(event_id, c) for c in commands])
            return [r.results[0] for r in results]
        keys = EventKeys(event_id)
        async with self.redis.pipeline(transaction=False) as pipe:
            for command in commands:
                wire = command.to_wire()
                await self._single[wire["op"]](
                    keys=keys.mutation_keys(), args=[keys.channel, json.dumps(wire)], client=pipe
                )
            replies = await pipe.execute()
        return [json.loads(r)["results"][0] for r in replies]

    async def sweep(self, event_id: str, limit: int = 500) -> SweepResult:
        keys = EventKeys(event_id)
        raw = json.loads(await self._sweep(keys=keys.mutation_keys(), args=[keys.channel, limit]))
        return SweepResult(
            version=int(raw["version"]),
            handled=int(raw["handled"]),
            more=bool(raw["more"]),
            queue=bool(raw.get("queue")),
        )

    async def hold(self, event_id: str, hold_id: str) -> HoldView | None:
        """One hold, read without a script (a read changes nothing); None if
        Redis has no record of it (never placed, or long forgotten)."""
        keys = EventKeys(event_id)
        if isinstance(self.redis, RedisCluster):
            # The clock of the node the scripts ran on (a cluster pipeline
            # refuses TIME, which has no key to route it by).
            raw, (seconds, micros) = await asyncio.gather(
                self.redis.hget(keys.holds, hold_id),
                self.redis.time(**beside(self.redis, keys.holds)),
            )
        else:
            async with self.redis.pipeline(transaction=False) as pipe:
                pipe.hget(keys.holds, hold_id)
                pipe.time()
                raw, (seconds, micros) = await pipe.execute()
        if raw is None:
            return None
        return HoldView.from_record(hold_id, json.loads(raw), seconds * 1000 + micros // 1000)

    async def retire(self, event_id: str) -> str | None:
        """Takes a finished event's inventory out of Redis (lua/retire.lua):
        None once retired, else why it stays (``missing``, ``status``,
        ``outbox``, ``holds``). The outbox leaves the writers' registry first,
        so that no writer recreates the stream it reads; it goes back if the
        inventory stays."""
        keys = EventKeys(event_id)
        await self.redis.srem(OUTBOX_REGISTRY, keys.outbox)
        await self.redis.srem(QUEUE_REGISTRY, event_id)
        raw = json.loads(
            await self._retire(keys=[*keys.mutation_keys(), keys.queue, keys.waiting], args=[])
        )
        if raw["retired"]:
            return None
        if raw["why"] != "missing":
            await self.redis.sadd(OUTBOX_REGISTRY, keys.outbox)
        return str(raw["why"])

    async def queue(self, event_id: str, action: str, *args: Any) -> dict[str, Any]:
        """The event's waiting room (lua/queue.lua): ``configure`` (a settings
        dict), ``join`` (customer, random place in [0, 1)), ``me`` (customer),
        ``admit`` (the tick's parameters) or ``state``. Raises the script's
        refusal (``queue_off``) as an EngineError."""
        keys = EventKeys(event_id)
        wire = [json.dumps(a) if isinstance(a, dict) else a for a in args]
        raw: dict[str, Any] = json.loads(
            await self._queue(keys=keys.queue_keys(), args=[action, *wire])
        )
        if not raw["ok"]:
            raise error_from_code(raw["code"], detail=raw.get("detail"))
        if action == "configure":  # the rooms /metrics reports on
            if args[0].get("on"):
                await self.redis.sadd(QUEUE_REGISTRY, event_id)
            else:
                await self.redis.srem(QUEUE_REGISTRY, event_id)
        return raw

    async def queue_join_many(
        self, event_id: str, joins: Sequence[tuple[str, float]]
    ) -> list[dict[str, Any]]:
        """Many joins (customer, random place) in one pipeline: tools and
        benchmarks filling a room; the API joins one at a time."""
        if isinstance(self.redis, RedisCluster):  # no EVALSHA in a cluster pipeline
            return list(
                await asyncio.gather(*[self.queue(event_id, "join", c, repr(p)) for c, p in joins])
            )
        keys = EventKeys(event_id).queue_keys()
        async with self.redis.pipeline(transaction=False) as pipe:
            for customer, place in joins:
                await self._queue(keys=keys, args=["join", customer, repr(place)], client=pipe)
            replies: list[Any] = await pipe.execute()
        return [json.loads(r) for r in replies]

    async def version(self, event_id: str) -> int | None:
        """The inventory's version now (one HGET); None if Redis has no inventory."""
        raw = await self.redis.hget(EventKeys(event_id).meta, "version")
        return None if raw is None else int(raw)

    async def put_card(self, event_id: str, revision: int, card: str) -> None:
        """The event's public card, at ``revision`` (a later write has a higher one)."""
        await self.redis.hset(EventKeys(event_id).card, mapping={"rev": revision, "json": card})

    async def card(self, event_id: str) -> tuple[int, bytes] | None:
        """(revision, card JSON), or None if the event has no card in Redis."""
        rev, body = await self.redis.hmget(EventKeys(event_id).card, ["rev", "json"])
        if rev is None or body is None:
            return None
        return int(rev), body.encode() if isinstance(body, str) else bytes(body)

    async def snapshot(self, event_id: str, *, seats: bool = True) -> Snapshot:
        """Counts per section and, with ``seats``, every taken seat, at one version."""
        raw = json.loads(
            await self._snapshot(
                keys=EventKeys(event_id).inventory_keys(), args=[] if seats else ["counts"]
            )
        )
        if not raw["ok"]:
            raise error_from_code(raw["code"])
        taken = raw["seats"] if isinstance(raw["seats"], dict) else {}
        return Snapshot(
            version=int(raw["version"]),
            status=EventStatus(raw["status"]),
            max_per_customer=int(raw.get("max_per_customer") or 0),
            sections=tuple(
                SectionAvailability(**{**s, "kind": SectionKind(s["kind"])})
                for s in raw["sections"]
            ),
            seats=taken,
        )
