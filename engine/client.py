"""EngineClient: how the rest of onsale talks to the engine.

Coalesces the commands for one event that arrive within a short window (or
until a batch is full) into one actor call, so a crowd of concurrent buyers
costs a handful of actor calls rather than one each. Each caller still gets
its own outcome, or its own :class:`~engine.errors.EngineError`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

import ray
from ray.actor import ActorHandle
from redis.asyncio.cluster import RedisCluster

from engine.actor import Restore, event_actor
from engine.errors import EngineError, EngineTimeout, EngineUnavailable, EventNotFound
from engine.model import (
    Command,
    ConfirmHold,
    EndOrder,
    EventStatus,
    ExtendHold,
    HoldPlaced,
    HoldQuantity,
    HoldReleased,
    HoldSeats,
    HoldView,
    NotePayment,
    OrderFinished,
    OrderRecorded,
    Outcome,
    PaymentRecorded,
    PlaceOrder,
    QueuePass,
    RefundSale,
    ReleaseHold,
    SaleConfirmed,
    SaleRefunded,
    Section,
    Snapshot,
    outcome_from_wire,
    raise_for,
)
from engine.redis_client import is_cluster, redis_client
from engine.scripts import InventoryScripts

log = logging.getLogger(__name__)

_O = TypeVar(
    "_O",
    HoldPlaced,
    HoldReleased,
    SaleConfirmed,
    SaleRefunded,
    OrderRecorded,
    OrderFinished,
    PaymentRecorded,
)
Send = Callable[[list[dict[str, Any]]], Awaitable[list[dict[str, Any]]]]  # one result each


class _Coalescer:
    """Gathers one event's commands for ``window_s`` or ``max_ops``, then sends them.

    At most ``max_in_flight`` batches are on their way at once: under load the
    next batch grows while the previous ones are answered, so the number of
    actor calls stays flat as requests rise (each call costs about a
    millisecond of CPU across this process, Ray and the actor).
    """

    def __init__(self, send: Send, window_s: float, max_ops: int, max_in_flight: int) -> None:
        self._send = send
        self._window_s = window_s
        self._max_ops = max_ops
        self._max_in_flight = max_in_flight
        self._items: list[tuple[Command, asyncio.Future[Outcome | EngineError]]] = []
        self._timer: asyncio.TimerHandle | None = None
        self._in_flight: set[asyncio.Task[None]] = set()

    def submit(self, command: Command) -> asyncio.Future[Outcome | EngineError]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Outcome | EngineError] = loop.create_future()
        self._items.append((command, future))
        if len(self._items) >= self._max_ops:
            self._flush()
        elif self._timer is None:
            self._timer = loop.call_later(self._window_s, self._flush)
        return future

    def _flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if len(self._in_flight) >= self._max_in_flight:
            return  # sent when a batch in flight is answered (_landed)
        items, self._items = self._items[: self._max_ops], self._items[self._max_ops :]
        if items:
            task = asyncio.get_running_loop().create_task(self._deliver(items))
            self._in_flight.add(task)
            task.add_done_callback(self._landed)
        if self._items and self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self._window_s, self._flush)

    def _landed(self, task: asyncio.Task[None]) -> None:
        self._in_flight.discard(task)
        if self._items and self._timer is None:
            self._flush()

    async def _deliver(self, items: list[tuple[Command, asyncio.Future[Any]]]) -> None:
        try:
            raw = await self._send([command.to_wire() for command, _ in items])
        except BaseException as exc:
            for _, future in items:
                if not future.done():
                    future.set_exception(exc)
            if not isinstance(exc, Exception):
                raise
            return
        try:
            outcomes = [outcome_from_wire(c, r) for (c, _), r in zip(items, raw, strict=True)]
        except Exception as exc:  # a malformed reply must not leave callers waiting
            for _, future in items:
                if not future.done():
                    future.set_exception(EngineUnavailable(f"malformed engine reply: {exc}"))
            return
        for (_, future), outcome in zip(items, outcomes, strict=True):
            if not future.done():
                future.set_result(outcome)


class EngineClient:
    """The engine's façade for API workers, the writer, tools and tests.

    Needs a Ray connection (:func:`engine.runtime.connect`) in this process.
    Mutations go through the event's actor; reads (snapshots) go straight to
    Redis, since a snapshot never changes anything.
    """

    def __init__(
        self,
        redis_url: str,
        *,
        redis_cluster: bool = False,
        window_ms: float = 1.5,
        max_batch_ops: int = 256,
        call_timeout_s: float = 5.0,
        start_timeout_s: float = 60.0,
        sweep_interval_s: float = 0.5,
        actor_max_batch_ops: int = 1024,
        max_in_flight: int = 2,
        restore: Restore | None = None,
        observer: Callable[[int, float, bool], None] | None = None,
        redis_pool_size: int | None = 200,
        redis_pool_timeout_s: float = 2.0,
        queue_tick: dict[str, float] | None = None,
    ) -> None:
        """``observer(commands, seconds, ok)`` is told of every actor call
        (the API feeds its metrics with it). ``redis_cluster``: ``redis_url``
        names a Redis Cluster; the actors this client creates are told so too.
        ``start_timeout_s`` bounds the organizer's calls that may start an
        event's actor (loading its inventory, opening or closing the sale):
        a new worker process on a busy machine takes seconds, which a buyer's
        ``call_timeout_s`` is too short for."""
        self.redis_url = redis_url
        self.redis_cluster = redis_cluster
        # The reads that go straight to Redis (snapshots, cards, a hold) wait
        # for one of ``redis_pool_size`` connections rather than fail: redis-py's
        # default pool refuses its 101st concurrent call outright.
        self._redis = redis_client(
            redis_url,
            cluster=redis_cluster,
            pool_size=redis_pool_size,
            pool_timeout_s=redis_pool_timeout_s,
        )
        self._scripts = InventoryScripts(self._redis)
        self._window_s = window_ms / 1000
        self._max_batch_ops = max_batch_ops
        self._call_timeout_s = call_timeout_s
        self._start_timeout_s = max(start_timeout_s, call_timeout_s)
        self._sweep_interval_s = sweep_interval_s
        self._actor_max_batch_ops = actor_max_batch_ops
        self._restore = restore
        self._queue_tick = queue_tick
        self._observer = observer
        self._max_in_flight = max_in_flight
        self._coalescers: dict[str, _Coalescer] = {}
        self._actors: dict[str, ActorHandle] = {}

    # -------------------------------------------------------------- commands

    async def hold_seats(
        self,
        event_id: str,
        customer_id: str,
        seats: Sequence[str],
        *,
        ttl_s: float,
        hold_id: str | None = None,
        fingerprint: str = "",
        queue_pass: QueuePass | None = None,
        queue_exempt: bool = False,
    ) -> HoldPlaced:
        """``fingerprint``: the request's, when it came with an Idempotency-Key;
        the engine then refuses the hold id for another request and replays
        a refusal to a retry. ``queue_pass``: the buyer's admission, needed
        while the event's waiting room is on (``queue_exempt``: a hold the
        engine makes itself for someone)."""
        command = HoldSeats(
            hold_id or new_id(),
            customer_id,
            tuple(seats),
            _ms(ttl_s),
            fingerprint,
            queue_pass,
            queue_exempt,
        )
        return _expect(await self.submit(event_id, command), HoldPlaced)

    async def hold_quantity(
        self,
        event_id: str,
        customer_id: str,
        section: str,
        quantity: int,
        *,
        ttl_s: float,
        hold_id: str | None = None,
        fingerprint: str = "",
        queue_pass: QueuePass | None = None,
        queue_exempt: bool = False,
    ) -> HoldPlaced:
        command = HoldQuantity(
            hold_id or new_id(),
            customer_id,
            section,
            quantity,
            _ms(ttl_s),
            fingerprint,
            queue_pass,
            queue_exempt,
        )
        return _expect(await self.submit(event_id, command), HoldPlaced)

    async def release(self, event_id: str, hold_id: str, customer_id: str = "") -> HoldReleased:
        return _expect(await self.submit(event_id, ReleaseHold(hold_id, customer_id)), HoldReleased)

    async def confirm(
        self,
        event_id: str,
        hold_id: str,
        order_id: str,
        meta: dict[str, Any] | None = None,
        *,
        late: bool = False,
        customer_id: str = "",
        seats: Sequence[str] | None = None,
        section: str | None = None,
        quantity: int = 0,
    ) -> SaleConfirmed:
        """Sells the hold to ``order_id`` (once: a retry is answered as a
        replay). ``late``: a payment after the hold lapsed; sell the same seats
        or GA places now if they are free (SeatsUnavailable / SoldOut if not).
        ``customer_id``, ``seats`` or ``section`` + ``quantity`` (the order's
        own copy) are used only if Redis has forgotten the hold's record."""
        command = ConfirmHold(
            hold_id,
            order_id,
            meta or {},
            late=late,
            customer_id=customer_id,
            seats=tuple(seats) if seats else None,
            section=section,
            quantity=quantity,
        )
        return _expect(await self.submit(event_id, command), SaleConfirmed)

    async def extend(
        self, event_id: str, hold_id: str, customer_id: str, until_ms: int
    ) -> HoldPlaced:
        """Keeps a live hold until ``until_ms`` (never shortens it)."""
        command = ExtendHold(hold_id, customer_id, until_ms)
        return _expect(await self.submit(event_id, command), HoldPlaced)

    async def refund(
        self,
        event_id: str,
        order_id: str,
        hold_id: str,
        *,
        seats: Sequence[str] | None = None,
        section: str | None = None,
        quantity: int = 0,
    ) -> SaleRefunded:
        """Returns the order's seats or GA places to sale, once per order (a
        retry answers ``replayed``); OrderNotSold if the engine has no such
        sale. The hold's record says what was sold while Redis keeps it; the
        seats or section + quantity given here are used once it is gone (for
        GA on the caller's word that the order was paid)."""
        command = RefundSale(order_id, hold_id, tuple(seats) if seats else None, section, quantity)
        return _expect(await self.submit(event_id, command), SaleRefunded)

    async def place_order(self, event_id: str, order: PlaceOrder) -> OrderRecorded:
        """Records the order of a live hold (once: a second is OrderExists) and
        keeps the hold until the order's payment window closes."""
        return _expect(await self.submit(event_id, order), OrderRecorded)

    async def end_order(
        self,
        event_id: str,
        hold_id: str,
        order_id: str,
        status: str,
        reason: str,
        *,
        stripe_event: str = "",
    ) -> OrderFinished:
        """Ends an order that will never be paid for its seats (``cancelled``,
        or ``refunded``); its hold is let go."""
        command = EndOrder(hold_id, order_id, status, reason, stripe_event)
        return _expect(await self.submit(event_id, command), OrderFinished)

    async def note_payment(
        self, event_id: str, hold_id: str, order_id: str, status: str
    ) -> PaymentRecorded:
        command = NotePayment(hold_id, order_id, status)
        return _expect(await self.submit(event_id, command), PaymentRecorded)

    async def submit(self, event_id: str, command: Command) -> Outcome:
        """Queues ``command`` into the event's next batch; raises its EngineError."""
        coalescer = self._coalescers.get(event_id)
        if coalescer is None:
            coalescer = _Coalescer(
                lambda ops: self._call_actor(event_id, ops),
                self._window_s,
                self._max_batch_ops,
                self._max_in_flight,
            )
            self._coalescers[event_id] = coalescer
        return raise_for(await coalescer.submit(command))

    # -------------------------------------------------------------- inventory

    async def load_inventory(
        self,
        event_id: str,
        sections: Sequence[Section],
        *,
        status: EventStatus = EventStatus.ON_SALE,
        max_per_customer: int = 0,
        max_held_per_customer: int = 0,
    ) -> bool:
        """Loads an event's seat map into Redis (once) and starts its actor."""
        actor = self.actor(event_id)
        return bool(
            await self._await(
                event_id,
                actor.load_inventory.remote(
                    list(sections), status, max_per_customer, max_held_per_customer
                ),
                self._start_timeout_s,
            )
        )

    async def set_status(self, event_id: str, status: EventStatus) -> EventStatus:
        """Opens, closes or cancels the sale in Redis; returns the previous status."""
        previous = await self._await(
            event_id, self.actor(event_id).set_status.remote(status), self._start_timeout_s
        )
        return EventStatus(previous)

    async def snapshot(self, event_id: str, *, seats: bool = True) -> Snapshot:
        return await self._scripts.snapshot(event_id, seats=seats)

    async def live_snapshot(self, event_id: str) -> Snapshot:
        """A full snapshot for the live feed; a retired inventory is rebuilt first."""
        try:
            return await self.snapshot(event_id)
        except EventNotFound:
            if not await self.restore(event_id):
                raise
            return await self.snapshot(event_id)

    async def queue(self, event_id: str, action: str, *args: Any) -> dict[str, Any]:
        """The event's waiting room, straight in Redis (see InventoryScripts.queue);
        admission is the actor's, on its timer."""
        return await self._scripts.queue(event_id, action, *args)

    async def ensure_actor(self, event_id: str) -> None:
        """Starts the event's actor if it is not running (its timer admits
        from the waiting room)."""
        await self._await(event_id, self.actor(event_id).stats.remote(), self._start_timeout_s)

    async def restore(self, event_id: str) -> bool:
        """Has the event's actor rebuild its inventory from Postgres if Redis
        has none (reads of a retired event); True if it was rebuilt."""
        return bool(
            await self._await(
                event_id, self.actor(event_id).restore.remote(), self._start_timeout_s
            )
        )

    async def version(self, event_id: str) -> int | None:
        return await self._scripts.version(event_id)

    async def put_card(self, event_id: str, revision: int, card: str) -> None:
        await self._scripts.put_card(event_id, revision, card)

    async def card(self, event_id: str) -> tuple[int, bytes] | None:
        return await self._scripts.card(event_id)

    async def hold(self, event_id: str, hold_id: str) -> HoldView | None:
        return await self._scripts.hold(event_id, hold_id)

    async def actor_stats(self, event_id: str) -> dict[str, int]:
        return dict(await self._await(event_id, self.actor(event_id).stats.remote()))

    async def actor_node(self, event_id: str) -> str:
        """The id of the Ray node the event's actor runs on."""
        return str(await self._await(event_id, self.actor(event_id).node_id.remote()))

    def actor(self, event_id: str) -> ActorHandle:
        handle = self._actors.get(event_id)
        if handle is None:
            handle = event_actor(
                event_id,
                self.redis_url,
                redis_cluster=self.redis_cluster,
                sweep_interval_s=self._sweep_interval_s,
                max_batch_ops=self._actor_max_batch_ops,
                restore=self._restore,
                queue_tick=self._queue_tick,
            )
            self._actors[event_id] = handle
        return handle

    async def ping_redis(self) -> bool:
        """Redis answers; on a cluster, every primary (each holds some events)."""
        if is_cluster(self._redis):
            return bool(await self._redis.ping(target_nodes=RedisCluster.PRIMARIES))
        return bool(await self._redis.ping())

    async def aclose(self) -> None:
        await self._redis.aclose()

    # -------------------------------------------------------------- plumbing

    async def _call_actor(self, event_id: str, ops: list[dict[str, Any]]) -> list[dict[str, Any]]:
        encoded = json.dumps(ops)
        began, ok = time.perf_counter(), False
        try:
            try:
                reply, offset = await self._await(
                    event_id, self.actor(event_id).apply.remote(encoded, len(ops))
                )
            except _ActorGone:
                # Gone for good (not restarting): the retry makes a fresh actor,
                # and the commands' ids make the second attempt safe.
                reply, offset = await self._await(
                    event_id, self.actor(event_id).apply.remote(encoded, len(ops))
                )
            ok = True
        finally:
            if self._observer is not None:
                self._observer(len(ops), time.perf_counter() - began, ok)
        return list(json.loads(reply)["results"][offset : offset + len(ops)])

    async def _await(self, event_id: str, ref: Any, timeout_s: float | None = None) -> Any:
        try:
            return await asyncio.wait_for(ref, timeout_s or self._call_timeout_s)
        except TimeoutError as exc:
            raise EngineTimeout() from exc
        except ray.exceptions.RayActorError as exc:
            self._actors.pop(event_id, None)
            raise _ActorGone(str(exc)) from exc
        except ray.exceptions.RayError as exc:
            cause = getattr(exc, "cause", None)
            if isinstance(cause, EngineError):
                raise cause from exc
            raise EngineUnavailable(str(cause or exc)) from exc


class _ActorGone(EngineUnavailable):
    pass


def new_id() -> str:
    return uuid.uuid4().hex


def _ms(seconds: float) -> int:
    return max(1, round(seconds * 1000))


def _expect(outcome: Outcome, kind: type[_O]) -> _O:
    if not isinstance(outcome, kind):
        raise EngineError(f"expected {kind.__name__}, got {type(outcome).__name__}")
    return outcome
