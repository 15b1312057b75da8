"""Live availability for seat-map viewers.

Each API process subscribes once per watched event to the event's Redis
channel (the scripts publish ``{version, changes}`` there, one message per
applied change set) and fans the changes out to its own WebSockets:

* Changes heard within one tick are merged into one delta per contiguous run
  of versions, serialized once, and offered to every viewer: a sale applying
  thousands of change sets a second costs a viewer a few messages a second.
  A merged delta says which versions it covers (``from_version``..``version``);
  its changes are absolute states, so applying it on top of any state at
  ``from_version - 1`` or later gives the state at ``version``.
* Every viewer has a bounded queue of its own. A viewer that cannot keep up
  overflows it, loses what was queued and gets a fresh snapshot instead; one
  that overflows again and again is dropped. Nothing ever waits for a viewer's
  socket but that viewer's own sender.
* A viewer whose next delta would leave a gap after its version (a change set
  this process never heard, e.g. across a Redis reconnect or an inventory
  rebuild, which restarts versions higher) gets a fresh snapshot instead.
* Snapshots are read once for many viewers: a snapshot is shared by every
  viewer that can use it (its version is at least what was broadcast before the
  viewer registered), and at most one read per event is in flight.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import Counter, Gauge
from redis.exceptions import RedisClusterException, RedisError
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type, wait_exponential

from api.broadcast import DirectWriter, text_frame
from engine.model import Snapshot
from engine.redis_client import AsyncRedis, is_cluster
from engine.scripts import EventKeys

log = logging.getLogger("onsale.live")

# Per worker ("liveall": one series per live process), so an operator can see
# how the kernel spread the sockets over the workers.
VIEWERS = Gauge("onsale_ws_viewers", "Seat-map viewers connected", multiprocess_mode="liveall")
VIEWER_MESSAGES = Counter("onsale_ws_messages_total", "Messages sent to viewers", ["type"])
SENT_SNAPSHOT, SENT_DELTA, SENT_OTHER = (
    VIEWER_MESSAGES.labels(kind) for kind in ("snapshot", "delta", "other")
)
VIEWER_OVERFLOWS = Counter(
    "onsale_ws_overflows_total", "Viewer queues that overflowed, by what was done", ["action"]
)
CHANGE_SETS = Counter("onsale_live_change_sets_total", "Change sets heard from Redis")

FetchSnapshot = Callable[[str], Awaitable[Snapshot]]
SUBSCRIPTION_LOST = (RedisError, RedisClusterException, OSError)


@dataclass(frozen=True)
class Delta:
    """A merged run of change sets, ready to send: as text for the ASGI path,
    as one frame for every socket written directly."""

    from_version: int
    version: int
    text: str
    frame: bytes


@dataclass(eq=False)
class Viewer:
    """One WebSocket's place in a feed. Its sender (see :meth:`next`) is the
    only reader of ``queue``; the feed's flush is the only writer of deltas."""

    feed: Feed
    limit: int
    version: int = 0  # what this viewer's map is at; 0 until its first snapshot
    offered: int = 0  # the newest version it has been offered (queued or snapshotted)
    queue: deque[Delta | str] = field(default_factory=deque)
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    needs_snapshot: bool = True
    overflows: int = 0
    dropped: bool = False
    direct: DirectWriter | None = None  # see api.broadcast
    sending: bool = False  # its sender is inside an ASGI send

    def write_through(self, delta: Delta) -> bool:
        """The fast path: a viewer that is caught up, with nothing queued or
        being sent, and room in its socket's buffer, gets the frame at once."""
        if (
            self.direct is None
            or self.sending
            or self.queue
            or self.needs_snapshot
            or not self.version < delta.version
            or delta.from_version > self.version + 1
            or not self.direct.write(delta.frame)
        ):
            return False
        self.version = self.offered = delta.version
        return True

    def offer(self, delta: Delta) -> None:
        if self.dropped or delta.version <= self.offered:
            return
        if delta.from_version > self.offered + 1:
            self.resync()  # a gap: deltas cannot bring this viewer up to date
            return
        if len(self.queue) >= self.limit:
            # Behind by a whole queue: what is queued is worth less than a
            # snapshot, and keeping it would let one viewer grow without end.
            self.queue.clear()
            self.overflows += 1
            if self.overflows > self.feed.hub.max_overflows:
                self.dropped = True
                VIEWER_OVERFLOWS.labels("dropped").inc()
            else:
                self.needs_snapshot = True
                VIEWER_OVERFLOWS.labels("resync").inc()
        else:
            self.queue.append(delta)
        self.offered = delta.version
        self.wake.set()

    def resync(self) -> None:
        """Answer with a fresh snapshot next (a client's ``resync``, or a gap).
        Deltas queued meanwhile stay: those the snapshot covers are skipped."""
        self.needs_snapshot = True
        self.wake.set()

    def say(self, text: str) -> None:
        """A control message (ping, error) for this viewer only."""
        self.queue.append(text)
        self.wake.set()

    async def next(self, timeout_s: float) -> str | None:
        """The next message to send; None when nothing came for ``timeout_s``
        (time for a ping). Raises :class:`ViewerTooSlow` once dropped."""
        while True:
            if self.dropped:
                raise ViewerTooSlow
            if self.needs_snapshot:
                # The snapshot is at least as new as anything offered so far,
                # and what is offered from here on follows on: together, whole.
                self.needs_snapshot = False
                self.offered = max(self.offered, self.feed.broadcast_version)
                version, text = await self.feed.snapshot(self.offered)
                if version < self.version:
                    continue  # never send a viewer back in time
                self.version = version
                self.offered = max(self.offered, version)
                SENT_SNAPSHOT.inc()
                return text
            while self.queue:
                message = self.queue.popleft()
                if isinstance(message, str):
                    SENT_OTHER.inc()
                    return message
                if message.version > self.version:
                    self.version = message.version
                    SENT_DELTA.inc()
                    return message.text
            self.wake.clear()
            try:
                await asyncio.wait_for(self.wake.wait(), timeout_s)
            except TimeoutError:
                return None


class ViewerTooSlow(Exception):
    """The viewer overflowed its queue more often than allowed."""


class Feed:
    """One event's subscription in this process, and its viewers."""

    def __init__(self, hub: LiveHub, event_id: str) -> None:
        self.hub = hub
        self.event_id = event_id
        self.channel = EventKeys(event_id).channel
        self.viewers: set[Viewer] = set()
        self.subscribed = asyncio.Event()
        self.pending: list[bytes] = []
        self.heard_version = 0  # newest version received from Redis
        self.broadcast_version = 0  # newest version offered to the viewers
        self._snapshot: tuple[int, str] | None = None
        self._reading: asyncio.Future[tuple[int, str]] | None = None
        self.linger: asyncio.TimerHandle | None = None

    def hear(self, raw: bytes) -> None:
        self.pending.append(raw)
        CHANGE_SETS.inc()

    def flush(self) -> None:
        """Merges what was heard since the last tick and offers it to every viewer."""
        pending, self.pending = self.pending, []
        for delta in self._merge(pending):
            self.broadcast_version = delta.version
            written = 0
            for viewer in self.viewers:
                if viewer.write_through(delta):
                    written += 1
                else:
                    viewer.offer(delta)
            SENT_DELTA.inc(written)

    def _merge(self, raws: list[bytes]) -> list[Delta]:
        runs: list[tuple[int, int, dict[str, Any], dict[str, Any]]] = []
        for raw in raws:
            message = json.loads(raw)
            version = int(message["version"])
            if version <= self.heard_version:
                continue  # heard twice (a resubscription replays nothing, but be safe)
            if not runs or version != runs[-1][1] + 1:
                runs.append((version, version, {}, {}))
            start, _, seats, sections = runs[-1]
            for change in message["changes"]:
                if "seat" in change:
                    seats[change["seat"]] = change
                else:
                    sections[change["section"]] = change
            runs[-1] = (start, version, seats, sections)
            self.heard_version = version
        deltas = []
        for start, end, seats, sections in runs:
            text = json.dumps(
                {
                    "type": "delta",
                    "version": end,
                    "from_version": start,
                    "changes": [*seats.values(), *sections.values()],
                },
                separators=(",", ":"),
            )
            deltas.append(Delta(start, end, text, text_frame(text)))
        return deltas

    async def snapshot(self, min_version: int) -> tuple[int, str]:
        """A snapshot at ``min_version`` or later, read at most once at a time.
        (Versions only grow, so a read started after ``min_version`` was heard
        is new enough; the bound only stops a spin on a forged message.)"""
        for _ in range(3):
            if self._snapshot is not None and self._snapshot[0] >= max(
                min_version, self.heard_version
            ):
                return self._snapshot
            if self._reading is None:
                self._reading = asyncio.ensure_future(self._read())
            reading = self._reading
            try:
                version, text = await asyncio.shield(reading)
            finally:
                if self._reading is reading and reading.done():
                    self._reading = None
            if version >= min_version:
                return version, text
        return version, text

    async def _read(self) -> tuple[int, str]:
        snapshot = await self.hub.fetch_snapshot(self.event_id)
        text = json.dumps(
            {
                "type": "snapshot",
                "version": snapshot.version,
                "status": snapshot.status,
                "sections": [s.__dict__ for s in snapshot.sections],
                "seats": snapshot.seats,
            },
            separators=(",", ":"),
        )
        if self._snapshot is None or snapshot.version >= self._snapshot[0]:
            self._snapshot = (snapshot.version, text)
        return snapshot.version, text


class LiveHub:
    """This process's subscriptions and viewers. ``tick_s`` bounds the delay a
    change waits to be merged; ``queue_limit`` is each viewer's queue, in
    messages; a viewer overflowing more than ``max_overflows`` times is dropped.

    On a Redis Cluster the scripts' PUBLISH reaches every node, so one
    connection to any node hears every event (redis-py's cluster pub/sub picks
    it by the first channel's slot); if that node is lost, the subscription is
    made again from the cluster's current map of nodes."""

    def __init__(
        self,
        redis: AsyncRedis,
        fetch_snapshot: FetchSnapshot,
        *,
        tick_s: float = 0.05,
        queue_limit: int = 64,
        max_overflows: int = 3,
        linger_s: float = 30.0,
    ) -> None:
        self.redis = redis
        self.fetch_snapshot = fetch_snapshot
        self.tick_s = tick_s
        self.queue_limit = queue_limit
        self.max_overflows = max_overflows
        self.linger_s = linger_s
        self.feeds: dict[str, Feed] = {}
        self._by_channel: dict[bytes, Feed] = {}
        self._pubsub = redis.pubsub()
        self._renew = False  # cluster: subscribe afresh before the next read
        self._reader: asyncio.Task[None] | None = None
        self._ticker: asyncio.Task[None] | None = None
        self._chores: set[asyncio.Future[None]] = set()

    @asynccontextmanager
    async def watch(
        self, event_id: str, direct: DirectWriter | None = None
    ) -> AsyncIterator[Viewer]:
        """A viewer of ``event_id``, subscribed before its first snapshot is
        read, so that every change set after that snapshot reaches it."""
        feed = self.feeds.get(event_id)
        if feed is None:
            feed = self.feeds[event_id] = Feed(self, event_id)
            self._by_channel[feed.channel.encode()] = feed
            await self._pubsub.subscribe(feed.channel)
            self._start()
        elif feed.linger is not None:
            feed.linger.cancel()
            feed.linger = None
        viewer = Viewer(feed, self.queue_limit, direct=direct)
        feed.viewers.add(viewer)
        VIEWERS.inc()
        try:
            await asyncio.wait_for(feed.subscribed.wait(), 10)
            yield viewer
        finally:
            VIEWERS.dec()
            feed.viewers.discard(viewer)
            if not feed.viewers and feed.linger is None:
                feed.linger = asyncio.get_running_loop().call_later(
                    self.linger_s, self._forget, feed
                )

    def _forget(self, feed: Feed) -> None:
        feed.linger = None
        if feed.viewers or self.feeds.get(feed.event_id) is not feed:
            return
        del self.feeds[feed.event_id]
        del self._by_channel[feed.channel.encode()]
        task = asyncio.ensure_future(self._unsubscribe(feed.channel))
        self._chores.add(task)
        task.add_done_callback(self._chores.discard)

    async def _unsubscribe(self, channel: str) -> None:
        with contextlib.suppress(RedisError, OSError):
            await self._pubsub.unsubscribe(channel)

    def _start(self) -> None:
        if self._reader is None:
            self._reader = asyncio.create_task(self._read_loop(), name="live-reader")
            self._ticker = asyncio.create_task(self._tick_loop(), name="live-ticker")

    async def _read_loop(self) -> None:
        """Hears change sets for as long as the hub lives. When the subscription
        is lost, reconnecting is retried with a backoff (tenacity) that starts
        again from the shortest wait once a message has been heard."""
        while True:
            retrying = AsyncRetrying(
                retry=retry_if_exception_type(SUBSCRIPTION_LOST),
                wait=wait_exponential(multiplier=0.1, max=5.0),
                before_sleep=self._lost,
            )
            await retrying(self._listen)

    async def _listen(self) -> None:
        """Reads and dispatches messages until the subscription is lost: raises
        if nothing was heard since the last loss (the retry waits first),
        returns if something was (the next attempt starts afresh)."""
        heard = False
        try:
            while True:
                if self._renew:
                    await self._resubscribe_elsewhere()
                if self._pubsub.connection is None:  # renewed, nothing to hear yet
                    await asyncio.sleep(self.tick_s)
                    continue
                message = await self._pubsub.get_message(timeout=None)
                heard = True
                if message is not None:
                    self._dispatch(message)
        except SUBSCRIPTION_LOST as exc:
            # redis-py reconnects and resubscribes on the next read; change
            # sets published meanwhile are lost, which viewers see as a gap.
            # On a cluster it would reconnect to the same node, which may be
            # gone for good (failed over): subscribe afresh instead.
            self._renew = is_cluster(self.redis)
            if not heard:
                raise
            log.warning("live: Redis subscription lost (%s); reconnecting", exc)

    def _lost(self, state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        delay = state.next_action.sleep if state.next_action else 0.0
        log.warning("live: Redis subscription lost (%s); reconnecting in %.1fs", exc, delay)

    def _dispatch(self, message: dict[str, Any]) -> None:
        feed = self._by_channel.get(message["channel"])
        if feed is None:
            return
        if message["type"] == "message":
            feed.hear(message["data"])
        elif message["type"] == "subscribe":
            feed.subscribed.set()

    async def _resubscribe_elsewhere(self) -> None:
        """Cluster only: every channel again, on a new connection to a node of
        the cluster's refreshed map (raises if none answers; the loop retries)."""
        assert is_cluster(self.redis)
        lost, self._pubsub = self._pubsub, self.redis.pubsub()
        with contextlib.suppress(RedisError, OSError):
            await lost.aclose()
        await self.redis.nodes_manager.initialize()
        if self._by_channel:
            await self._pubsub.subscribe(*self._by_channel)
        self._renew = False

    async def _tick_loop(self) -> None:
        while True:
            began = time.monotonic()
            for feed in list(self.feeds.values()):
                if feed.pending:
                    try:
                        feed.flush()
                    except Exception:  # one bad message must not stop every feed
                        log.exception("live: could not fan out event %s", feed.event_id)
            await asyncio.sleep(max(0.0, self.tick_s - (time.monotonic() - began)))

    async def aclose(self) -> None:
        for task in (self._reader, self._ticker):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        with contextlib.suppress(RedisError, OSError):
            await self._pubsub.aclose()
