"""Seat-map viewers, a viewer that never reads, and a change storm, for the
live-stream tests and the viewer benchmark."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import random
import socket
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import websockets
from redis.asyncio import Redis

from engine.client import EngineClient
from engine.errors import EngineError
from engine.scripts import EventKeys


@dataclass
class SeatMap:
    """What a viewer knows: the seats that are not available, the section counts."""

    version: int = 0
    seats: dict[str, str] = field(default_factory=dict)
    sections: dict[str, tuple[int, int, int]] = field(default_factory=dict)

    def load(self, snapshot: dict[str, Any]) -> None:
        self.version = snapshot["version"]
        self.seats = dict(snapshot["seats"])
        self.sections = {
            s["code"]: (s["available"], s["held"], s["sold"]) for s in snapshot["sections"]
        }

    def apply(self, changes: list[dict[str, Any]]) -> None:
        for change in changes:
            if "seat" in change:
                if change["status"] == "available":
                    self.seats.pop(change["seat"], None)
                else:
                    self.seats[change["seat"]] = change["status"]
            else:
                counts = (change["available"], change["held"], change["sold"])
                self.sections[change["section"]] = counts


@dataclass
class Viewer:
    """A seat-map viewer on a real WebSocket, following the client rules in
    API.md: a delta that does not follow on from its version is a gap, answered
    by asking for a resync and waiting for the snapshot."""

    url: str
    map: SeatMap = field(default_factory=SeatMap)
    snapshots: int = 0
    deltas: int = 0
    gaps: int = 0
    pings: int = 0
    received: list[tuple[int, int, float]] = field(default_factory=list)  # from, to, when
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    closed: tuple[int | None, str] | None = None
    _awaiting_snapshot: bool = True

    async def run(self) -> None:
        try:
            async with websockets.connect(self.url, max_size=None, compression=None) as ws:
                async for raw in ws:
                    now = time.monotonic()
                    message = json.loads(raw)
                    kind = message["type"]
                    if kind == "snapshot":
                        self.map.load(message)
                        self.snapshots += 1
                        self._awaiting_snapshot = False
                        self.ready.set()
                    elif kind == "delta" and not self._awaiting_snapshot:
                        first = message.get("from_version", message["version"])
                        if message["version"] <= self.map.version:
                            continue
                        if first > self.map.version + 1:
                            self.gaps += 1
                            self._awaiting_snapshot = True
                            await ws.send(json.dumps({"type": "resync"}))
                            continue
                        self.map.apply(message["changes"])
                        self.map.version = message["version"]
                        self.deltas += 1
                        self.received.append((first, message["version"], now))
                    elif kind == "ping":
                        self.pings += 1
        except websockets.ConnectionClosed as exc:
            self.closed = (exc.rcvd.code if exc.rcvd else None, exc.rcvd.reason if exc.rcvd else "")
        else:
            self.closed = (None, "")


class ChangeClock:
    """When each change set was published, heard on the event's channel by a
    subscriber of its own: the reference a viewer's delivery latency is measured
    against (same machine, same monotonic clock)."""

    def __init__(self, redis: Redis, event_id: str) -> None:
        self._pubsub = redis.pubsub()
        self._channel = EventKeys(event_id).channel
        self.published: dict[int, float] = {}
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> ChangeClock:
        await self._pubsub.subscribe(self._channel)
        self._task = asyncio.create_task(self._listen())
        return self

    async def _listen(self) -> None:
        async for message in self._pubsub.listen():
            if message["type"] == "message":
                self.published[json.loads(message["data"])["version"]] = time.monotonic()

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)
        await self._pubsub.aclose()

    def latencies_s(self, viewers: list[Viewer]) -> list[float]:
        """For every delta: from the publish of its oldest change set to its arrival."""
        return [
            when - self.published[first]
            for viewer in viewers
            for first, _, when in viewer.received
            if first in self.published
        ]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


class StalledViewer:
    """Opens the WebSocket by hand on a socket with a tiny receive buffer, asks
    for snapshots over and over, and never reads a byte of the answers."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        self.sock.setblocking(False)

    async def open(self, host: str, port: int, path: str) -> StalledViewer:
        loop = asyncio.get_running_loop()
        await loop.sock_connect(self.sock, (host, port))
        key = base64.b64encode(os.urandom(16)).decode()
        await loop.sock_sendall(
            self.sock,
            (
                f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                "Sec-WebSocket-Version: 13\r\n\r\n"
            ).encode(),
        )
        head = b""
        while b"\r\n\r\n" not in head:  # the 101 answer, and not a byte further
            head += await loop.sock_recv(self.sock, 1)
        assert head.startswith(b"HTTP/1.1 101"), head
        return self

    async def ask_for_snapshots(self, every_s: float) -> None:
        """Until cancelled: each ask costs the server a snapshot sent into a
        socket nobody reads, so its buffers fill within a second or so."""
        frame = _masked_text_frame(b'{"type":"resync"}')
        loop = asyncio.get_running_loop()
        while True:
            await loop.sock_sendall(self.sock, frame)
            await asyncio.sleep(every_s)

    def close(self) -> None:
        self.sock.close()


def _masked_text_frame(payload: bytes) -> bytes:
    mask = os.urandom(4)
    body = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return bytes([0x81, 0x80 | len(payload)]) + mask + body


@dataclass
class StormStats:
    applied: int = 0
    refused: int = 0


async def change_storm(
    engine: EngineClient,
    event_id: str,
    seats: list[str],
    ops: int,
    *,
    general: str | None = None,
    concurrency: int = 50,
    rate_per_s: float | None = None,
    seed: int = 7,
) -> StormStats:
    """``ops`` random holds, releases and confirms from ``concurrency`` callers
    (all through the engine, as the API would send them); ``rate_per_s`` paces
    them. Holds last ten minutes, so nothing expires behind the test's back."""
    rng = random.Random(seed)
    live: list[str] = []
    stats = StormStats()
    issued = 0
    began = time.monotonic()

    async def caller() -> None:
        nonlocal issued
        while issued < ops:
            issued += 1
            if rate_per_s:
                delay = began + issued / rate_per_s - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
            roll = rng.random()
            try:
                if len(live) < 20 or roll < 0.5:
                    if general is not None and roll < 0.15:
                        hold = await engine.hold_quantity(
                            event_id, uuid.uuid4().hex, general, rng.randint(1, 3), ttl_s=600
                        )
                    else:
                        chosen = rng.sample(seats, rng.randint(1, 3))
                        hold = await engine.hold_seats(
                            event_id, uuid.uuid4().hex, chosen, ttl_s=600
                        )
                    live.append(hold.hold_id)
                elif roll < 0.75:
                    await engine.release(event_id, live.pop(rng.randrange(len(live))))
                else:
                    hold_id = live.pop(rng.randrange(len(live)))
                    await engine.confirm(
                        event_id,
                        hold_id,
                        f"{event_id}-{hold_id}",
                        {"amount_cents": 1000, "currency": "EUR"},
                    )
                stats.applied += 1
            except EngineError:
                stats.refused += 1  # a seat someone else has, or GA sold out

    await asyncio.gather(*(caller() for _ in range(concurrency)))
    return stats
