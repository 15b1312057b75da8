"""``onsale bench viewers``: N seat-map viewers on one API process during a
hold storm.

Starts the embedded stack and one API worker (``api.app``, as ``onsale serve``
runs it), publishes an event shaped like the demo (HALL 40x75 seats, FLOOR
1,500 GA), connects N WebSocket viewers from ``--client-procs`` processes, and
drives a storm of holds and releases straight into the engine at ``--rate``
operations a second (as other API workers would), so the API process under
test does nothing but fan the changes out.

Figures per configuration (medians of ``--repeat`` runs):

* delivery latency, p50 and p99: from the moment a plain Redis subscriber in
  this process hears a change set to the moment a viewer process reads the
  delta carrying it (the oldest change set of a merged delta counts, so the
  merge's wait is included; one machine, one monotonic clock);
* the API process's CPU (psutil, user + system) per wall second, and per 1,000
  viewers over the same storm with no viewers at all;
* messages per viewer per second.

The reference, measured side by side in the same run: the same fan-out without
merging (``--reference-tick-ms``, 1 ms: about one message per change set), at
the smallest N. Target: 5,000 viewers with p99 <= 250 ms.

The viewers are a lean WebSocket reader of this module (a frame parser on a raw
asyncio protocol, not a library client) so that the client side, which shares
the machine's cores with the server, costs as little as it can: a ``--sample``
share of them (10%) parse every frame and time the deltas; the rest read the
bytes off their sockets and drop them. Since those answer no protocol pings,
the server under test runs with ``--ws-ping-interval 0``.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import multiprocessing as mp
import os
import random
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import psutil
from redis.asyncio import Redis
from rich.console import Console
from rich.table import Table

from api.broadcast import PROTOCOL as BROADCAST_PROTOCOL
from api.settings import Settings
from api.supervisor import embedded_stack
from bench.http import launch_until_ready
from engine.client import EngineClient
from engine.errors import EngineError
from engine.scripts import EventKeys
from persistence.db import create_engine
from persistence.embedded import free_port
from persistence.events import EventDraft, SectionSpec
from sales import catalog
from sales.vocabulary import SectionKind

TARGET_VIEWERS, TARGET_P99_MS = 5000, 250.0
DELTA = re.compile(rb'"version":(\d+),"from_version":(\d+)')
SEATS = [f"HALL-{r}-{s}" for r in range(1, 41) for s in range(1, 76)]


# ------------------------------------------------------------- the viewers


def more_files() -> None:
    """As many sockets as the hard limit allows: thousands of viewers each."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


class LeanViewer(asyncio.Protocol):
    """Reads a seat-map stream off a raw socket: the 101, then unmasked server
    frames; answers protocol pings; notes when each delta arrived."""

    def __init__(
        self, host: str, path: str, log: list[tuple[int, float]] | None, ready: Any
    ) -> None:
        self.request = (
            f"GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\n"
            "Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
            f"Sec-WebSocket-Key: {base64.b64encode(os.urandom(16)).decode()}\r\n\r\n"
        ).encode()
        self.buffer = bytearray()
        self.upgraded = False
        self.log = log
        self.ready = ready
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        transport.write(self.request)

    def data_received(self, data: bytes) -> None:
        now = time.monotonic()
        if self.log is None and self.upgraded:
            return  # not sampled: the bytes are read off the socket, and dropped
        self.buffer += data
        if not self.upgraded:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            assert self.buffer.startswith(b"HTTP/1.1 101"), bytes(self.buffer[:80])
            del self.buffer[: end + 4]
            self.upgraded = True
            if self.log is None:
                self.ready()  # the snapshot comes first: whatever follows the 101
                return
        while len(self.buffer) >= 2:
            opcode, length = self.buffer[0] & 0x0F, self.buffer[1] & 0x7F
            start = 2
            if length == 126:
                length, start = int.from_bytes(self.buffer[2:4], "big"), 4
            elif length == 127:
                length, start = int.from_bytes(self.buffer[2:10], "big"), 10
            if len(self.buffer) < start + length:
                return
            payload = bytes(self.buffer[start : start + length])
            del self.buffer[: start + length]
            if opcode == 0x1:
                self.message(payload, now)
            elif opcode == 0x9:  # ping: pong with the same payload, masked
                mask = os.urandom(4)
                body = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
                assert self.transport is not None
                self.transport.write(bytes([0x8A, 0x80 | len(payload)]) + mask + body)

    def message(self, payload: bytes, now: float) -> None:
        head = payload[:80]
        if head.startswith(b'{"type":"delta"'):
            found = DELTA.search(head)
            if found and self.log is not None:
                self.log.append((int(found[2]), now))
        elif head.startswith(b'{"type":"snapshot"'):
            self.ready()


def viewer_process(port: int, event_id: str, count: int, sample: float, pipe: Connection) -> None:
    """One client process: ``count`` viewers, of which a ``sample`` share note
    when deltas arrive; reports connected, then on "stop" turns publish times
    into a latency histogram (ms) for the parent."""
    more_files()

    async def main() -> None:
        loop = asyncio.get_running_loop()
        log: list[tuple[int, float]] = []
        snapshots = 0
        all_ready = asyncio.Event()

        def ready() -> None:
            nonlocal snapshots
            snapshots += 1
            if snapshots >= count:
                all_ready.set()

        transports = []
        path = f"/ws/events/{event_id}"
        every = max(1, round(1 / sample))
        for start in range(0, count, 100):  # in waves: the listen backlog is finite
            made = await asyncio.gather(
                *(
                    loop.create_connection(
                        lambda i=i: LeanViewer(  # type: ignore[misc]
                            f"127.0.0.1:{port}", path, log if i % every == 0 else None, ready
                        ),
                        "127.0.0.1",
                        port,
                    )
                    for i in range(start, min(count, start + 100))
                )
            )
            transports += [t for t, _ in made]
        await asyncio.wait_for(all_ready.wait(), 120)
        pipe.send(("connected", count))
        command, published = await loop.run_in_executor(None, pipe.recv)
        assert command == "stop"
        histogram: Counter[int] = Counter()
        for first, when in log:
            sent = published.get(first)
            if sent is not None:
                histogram[int((when - sent) * 1000)] += 1
        for transport in transports:
            transport.close()
        sampled = len(range(0, count, every))
        pipe.send(("done", (dict(histogram), len(log), sampled)))

    asyncio.run(main())


# ------------------------------------------------------------- the storm


async def storm(
    redis_url: str, event_id: str, rate_per_s: float, duration_s: float
) -> dict[int, float]:
    """Holds and releases at ``rate_per_s`` for ``duration_s``; returns when
    each change set was published, as a subscriber of this process heard it."""
    redis = Redis.from_url(redis_url)
    pubsub = redis.pubsub()
    await pubsub.subscribe(EventKeys(event_id).channel)
    published: dict[int, float] = {}

    async def listen() -> None:
        async for message in pubsub.listen():
            if message["type"] == "message":
                published[json.loads(message["data"])["version"]] = time.monotonic()

    listener = asyncio.create_task(listen())
    engine = EngineClient(redis_url)
    rng = random.Random(42)
    live: list[str] = []
    began = time.monotonic()
    issued = 0

    async def caller() -> None:
        nonlocal issued
        while time.monotonic() - began < duration_s:
            issued += 1
            delay = began + issued / rate_per_s - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            try:
                if len(live) > 400 and rng.random() < 0.5:
                    await engine.release(event_id, live.pop(0))
                else:
                    seats = rng.sample(SEATS, rng.randint(1, 2))
                    placed = await engine.hold_seats(event_id, "storm", seats, ttl_s=600)
                    live.append(placed.hold_id)
            except EngineError:
                pass  # seats someone else holds: no change, no message

    try:
        await asyncio.gather(*(caller() for _ in range(64)))
        await asyncio.sleep(1.0)  # the last deltas reach the viewers
        for hold_id in live:  # leave the map as it was, for the next run
            await engine.release(event_id, hold_id)
    finally:
        listener.cancel()
        await engine.aclose()
        await pubsub.aclose()
        await redis.aclose()
    return published


# ------------------------------------------------------------- one run


@dataclass
class Run:
    viewers: int
    tick_ms: float
    run: int
    p50_ms: float
    p99_ms: float
    cpu_per_s: float  # the API process's CPU seconds per wall second
    messages_per_viewer_s: float
    deltas: int


def percentile(histogram: Counter[int], q: float) -> float:
    total = sum(histogram.values())
    if not total:
        return float("nan")
    seen = 0
    for ms in sorted(histogram):
        seen += histogram[ms]
        if seen >= q * total:
            return float(ms)
    return float(max(histogram))


def start_api(
    ready: Settings, port: int, tick_ms: float, data_dir: Path
) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "ONSALE_REDIS_URL": ready.redis_url or "",
        "ONSALE_DATABASE_URL": ready.database_url or "",
        "RAY_ADDRESS": ready.ray_address or os.environ.get("RAY_ADDRESS", ""),
        "ONSALE_DATA_DIR": str(data_dir),
        "ONSALE_RATE_LIMITS": "off",
        "ONSALE_LIVE_MAX_PER_ADDRESS": "1000000",  # every viewer comes from loopback
        "ONSALE_LOG_LEVEL": "WARNING",
        "ONSALE_LIVE_TICK_MS": str(tick_ms),
    }
    cmd = [
        sys.executable, "-m", "uvicorn", "api.app:create_app", "--factory",
        "--host", "127.0.0.1", "--port", str(port), "--no-access-log",
        "--log-level", "warning", "--ws-per-message-deflate", "false", "--backlog", "4096",
        "--ws", BROADCAST_PROTOCOL, "--ws-ping-interval", "0",
    ]  # fmt: skip
    return launch_until_ready(cmd, env, port)


def one_run(
    cfg: argparse.Namespace, ready: Settings, port: int, server: psutil.Process,
    event_id: str, viewers: int, tick_ms: float, run: int,
) -> Run:  # fmt: skip
    ctx = mp.get_context("spawn")
    procs, pipes = [], []
    share = [viewers // cfg.client_procs + (i < viewers % cfg.client_procs)
             for i in range(cfg.client_procs)]  # fmt: skip
    for count in (c for c in share if c):
        parent, child = ctx.Pipe()
        proc = ctx.Process(target=viewer_process, args=(port, event_id, count, cfg.sample, child))
        proc.start()
        procs.append(proc)
        pipes.append(parent)
    for pipe in pipes:
        assert pipe.recv()[0] == "connected"
    before = server.cpu_times()
    began = time.monotonic()
    published = asyncio.run(storm(ready.redis_url or "", event_id, cfg.rate, cfg.duration))
    wall = time.monotonic() - began
    after = server.cpu_times()
    histogram: Counter[int] = Counter()
    deltas = sampled = 0
    for pipe in pipes:
        pipe.send(("stop", published))
    for pipe in pipes:
        _, (part, count, timed) = pipe.recv()
        histogram.update({int(k): v for k, v in part.items()})
        deltas += count
        sampled += timed
    for proc in procs:
        proc.join(30)
    cpu = (after.user - before.user + after.system - before.system) / wall
    return Run(
        viewers, tick_ms, run, percentile(histogram, 0.5), percentile(histogram, 0.99),
        cpu, deltas / max(1, sampled) / wall, deltas,
    )  # fmt: skip


async def prepare(ready: Settings) -> str:
    db = create_engine(ready.database_url or "", pool_size=2)
    engine = EngineClient(ready.redis_url or "")
    event_id = f"bench-viewers-{uuid.uuid4().hex[:8]}"
    try:
        draft = EventDraft(  # no per-customer limit: the figures stay comparable
            "Viewer bench",
            "Bench",
            datetime.now(UTC),
            "EUR",
            hold_ttl_s=600,
            max_tickets_per_customer=0,
            max_held_per_customer=0,
        )
        sections = [
            SectionSpec("HALL", "Hall", 5000, SectionKind.SEATED, rows=40, seats_per_row=75),
            SectionSpec("FLOOR", "Floor", 3000, SectionKind.GENERAL, capacity=1500),
        ]
        await catalog.create_event(db, None, draft, sections, event_id=event_id)
        await catalog.put_on_sale(db, engine, event_id)
    finally:
        await engine.aclose()
        await db.dispose()
    return event_id


def bench(cfg: argparse.Namespace, ready: Settings, data_dir: Path) -> list[Run]:
    event_id = asyncio.run(prepare(ready))
    plans = [(n, cfg.tick_ms) for n in [0, *cfg.viewers]]
    if cfg.reference_tick_ms:
        plans.append((min(cfg.viewers), cfg.reference_tick_ms))
    runs: list[Run] = []
    console = Console()
    for tick_ms in sorted({t for _, t in plans}, reverse=True):
        port = free_port()
        api = start_api(ready, port, tick_ms, data_dir)
        try:
            server = psutil.Process(api.pid)
            # Runs with no viewers first (a feed lingers for a while after its
            # last viewer), then the others interleaved, run by run.
            mine = [n for n, t in plans if t == tick_ms]
            order = [(0, r) for r in range(cfg.repeat) if 0 in mine] + [
                (n, r) for r in range(cfg.repeat) for n in mine if n
            ]
            for n, run in order:
                result = one_run(cfg, ready, port, server, event_id, n, tick_ms, run)
                runs.append(result)
                console.print(
                    f"  {n:>5} viewers, tick {tick_ms:g} ms, run {run}: p50 {result.p50_ms:.0f}"
                    f" ms, p99 {result.p99_ms:.0f} ms, API CPU {result.cpu_per_s:.0%}, "
                    f"{result.messages_per_viewer_s:.1f} msg/viewer/s"
                )
        finally:
            api.terminate()
            api.wait(timeout=30)
    return runs


def report(cfg: argparse.Namespace, runs: list[Run]) -> dict[str, Any]:
    console = Console()
    table = Table(
        title=f"viewers on one API process, storm {cfg.rate:g} ops/s for {cfg.duration:g} s; "
        f"medians of {cfg.repeat}"
    )
    for column in ("viewers", "tick ms", "p50 ms", "p99 ms", "API CPU", "CPU/1k viewers",
                   "msg/viewer/s"):  # fmt: skip
        table.add_column(column, justify="right")
    summary: dict[str, Any] = {}
    idle = {r.tick_ms: r for r in runs if r.viewers == 0}
    base_cpu = statistics.median(r.cpu_per_s for r in runs if r.viewers == 0) if idle else 0.0
    for key in sorted({(r.viewers, r.tick_ms) for r in runs}):
        group = [r for r in runs if (r.viewers, r.tick_ms) == key]
        p50 = statistics.median(r.p50_ms for r in group)
        p99 = statistics.median(r.p99_ms for r in group)
        cpu = statistics.median(r.cpu_per_s for r in group)
        rate = statistics.median(r.messages_per_viewer_s for r in group)
        per_1k = (cpu - base_cpu) / (key[0] / 1000) if key[0] else float("nan")
        summary[f"{key[0]}@{key[1]:g}ms"] = {
            "p50_ms": p50, "p99_ms": p99, "cpu": cpu, "cpu_per_1k": per_1k, "msg_per_s": rate,
        }  # fmt: skip
        table.add_row(
            f"{key[0]:,}", f"{key[1]:g}", f"{p50:.0f}", f"{p99:.0f}", f"{cpu:.0%}",
            "-" if not key[0] else f"{per_1k:.1%}", f"{rate:.1f}",
        )  # fmt: skip
    console.print(table)
    target = summary.get(f"{TARGET_VIEWERS}@{cfg.tick_ms:g}ms")
    if target:
        ok = target["p99_ms"] <= TARGET_P99_MS
        console.print(
            f"{TARGET_VIEWERS:,} viewers p99 = {target['p99_ms']:.0f} ms "
            f"(target <= {TARGET_P99_MS:g} ms): {'PASS' if ok else 'MISS'}"
        )
    small = min(cfg.viewers)
    merged = summary.get(f"{small}@{cfg.tick_ms:g}ms")
    unmerged = summary.get(f"{small}@{cfg.reference_tick_ms:g}ms")
    if merged and unmerged and cfg.reference_tick_ms:
        console.print(
            f"reference, {small:,} viewers without merging ({cfg.reference_tick_ms:g} ms tick): "
            f"messages x{unmerged['msg_per_s'] / merged['msg_per_s']:.1f}, "
            f"CPU/1k viewers x{unmerged['cpu_per_1k'] / merged['cpu_per_1k']:.1f}, "
            f"p99 {unmerged['p99_ms']:.0f} vs {merged['p99_ms']:.0f} ms"
        )
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="onsale bench viewers", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    parser.add_argument("--viewers", type=int, nargs="+", default=[1000, 5000])
    parser.add_argument("--rate", type=float, default=1000, help="storm operations per second")
    parser.add_argument("--duration", type=float, default=15.0, help="seconds of storm per run")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--client-procs", type=int, default=2)
    parser.add_argument(
        "--sample", type=float, default=0.1, help="share of viewers whose deltas are timed"
    )
    parser.add_argument("--tick-ms", type=float, default=50)
    parser.add_argument("--reference-tick-ms", type=float, default=1, help="0: no reference")
    parser.add_argument("--json", type=Path, help="write every run's figures here")
    cfg = parser.parse_args(argv)
    more_files()
    with (
        tempfile.TemporaryDirectory() as tmp,
        embedded_stack(Settings(data_dir=Path(tmp))) as ready,
    ):
        runs = bench(cfg, ready, Path(tmp))
    summary = report(cfg, runs)
    if cfg.json:
        cfg.json.write_text(
            json.dumps({"runs": [asdict(r) for r in runs], "summary": summary}, indent=2)
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
