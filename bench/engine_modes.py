"""The three modes of ``onsale bench engine`` and the servers they run on.

Each runner loads fresh inventory under a new id (an event for the engine and
raw modes, a ``run`` for the baseline), gives it the stream of
:mod:`bench.workload`, reconciles every success with the final state for the
oversell figure, and removes what it loaded, so repeats never see each other:

engine
    :func:`run_engine`: callers through one :class:`~engine.client.EngineClient`
    (coalescer -> Ray actor -> ``batch.lua``), as the API calls it.
raw
    :func:`run_raw`: ``hold.lua`` straight on Redis, pipelined, no Ray.
baseline
    :func:`run_baseline`: a Postgres transaction per hold (:mod:`bench.pg_baseline`).

Redis and Postgres are the ones named by ``ONSALE_REDIS_URL`` and
``ONSALE_DATABASE_URL``, or embedded servers started for the benchmark
(:func:`running_servers`, which also starts Ray when the engine mode runs).
:func:`run_all` opens one :class:`Bench` of connections for every mode and
interleaves the modes ``--repeat`` times.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import ray
from redis.asyncio import Redis
from rich.console import Console

from bench.pg_baseline import (
    PG_SCHEMA,
    pg_hold_quantity,
    pg_hold_seats,
    pg_load,
    pg_oversell,
    pg_unload,
)
from bench.report import header, progress_line
from bench.workload import (
    GA_CODE,
    SECTIONS,
    TTL_S,
    Held,
    Request,
    RunResult,
    Tally,
    build_stream,
    drive,
    redis_oversell,
    result_of,
)
from engine import runtime
from engine.client import EngineClient
from engine.errors import SeatsUnavailable, SoldOut
from engine.scripts import EventKeys, InventoryScripts
from persistence.embedded import EmbeddedPostgres, EmbeddedValkey

REFUSALS = frozenset({SoldOut.code, SeatsUnavailable.code})  # normal answers, not failures


# ---------------------------------------------------------------- engine and raw modes


@dataclass
class Bench:
    """What the modes share for the whole benchmark."""

    cfg: argparse.Namespace
    client: EngineClient | None  # None when the engine mode is not run (no Ray)
    scripts: InventoryScripts  # also the raw mode's own Redis connection
    pool: asyncpg.Pool | None  # None when the baseline is not run


async def run_engine(bench: Bench, stream: Sequence[Request], run: int) -> RunResult:
    client, cfg = bench.client, bench.cfg
    assert client is not None
    event_id = uuid.uuid4().hex
    await client.load_inventory(event_id, SECTIONS, max_per_customer=0)

    async def call(request: Request) -> Held | None:
        try:
            if request.seats:
                placed = await client.hold_seats(
                    event_id, request.customer_id, request.seats,
                    ttl_s=TTL_S, hold_id=request.hold_id,
                )  # fmt: skip
            else:
                placed = await client.hold_quantity(
                    event_id, request.customer_id, GA_CODE, request.quantity,
                    ttl_s=TTL_S, hold_id=request.hold_id,
                )  # fmt: skip
        except (SoldOut, SeatsUnavailable):
            return None
        return Held(placed.hold_id, placed.quantity, placed.seats or ())

    try:
        tally = await drive(stream, cfg.callers, call, think_s=cfg.think_ms / 1000, seed=cfg.seed)
        oversell = redis_oversell(await client.snapshot(event_id), tally.held)
        stats = await client.actor_stats(event_id)
    finally:
        # Detached actors outlive the driver on a cluster, and even idle each
        # one keeps a sweep loop running on the benchmark's cores.
        ray.kill(client.actor(event_id), no_restart=True)
        await bench.scripts.redis.unlink(*EventKeys(event_id).mutation_keys())
    result = result_of("engine", run, tally, oversell)
    result.extra = {"batches": stats["batches"], "ops": stats["ops"]}
    return result


def _raw_answer(request: Request, reply: dict[str, Any]) -> Held | None:
    if reply.get("ok"):
        return Held(str(reply["hold_id"]), int(reply["quantity"]), tuple(reply.get("seats") or ()))
    if reply.get("code") in REFUSALS:
        return None
    raise RuntimeError(f"hold {request.hold_id}: {reply.get('code')}")


async def run_raw(bench: Bench, stream: Sequence[Request], run: int) -> RunResult:
    scripts, cfg = bench.scripts, bench.cfg
    event_id = uuid.uuid4().hex
    await scripts.load_inventory(event_id, SECTIONS, max_per_customer=0)
    size = cfg.pipeline
    chunks = iter([stream[i : i + size] for i in range(0, len(stream), size)])
    tally = Tally()

    async def worker() -> None:
        for chunk in chunks:
            began = time.perf_counter()
            try:
                replies = await scripts.apply_one_pipelined(event_id, [r.command() for r in chunk])
            except Exception as exc:
                tally.fail(f"{type(exc).__name__}: {exc}", len(chunk))
                continue
            took = time.perf_counter() - began  # every request waits for its whole pipeline
            for request, reply in zip(chunk, replies, strict=True):
                try:
                    tally.answer(took, _raw_answer(request, reply))
                except RuntimeError as exc:
                    tally.fail(str(exc))

    try:
        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(cfg.raw_workers)))
        tally.elapsed_s = time.perf_counter() - start
        oversell = redis_oversell(await scripts.snapshot(event_id), tally.held)
    finally:
        await scripts.redis.unlink(*EventKeys(event_id).mutation_keys())
    return result_of("raw", run, tally, oversell)


# ---------------------------------------------------------------- baseline (Postgres)


async def run_baseline(bench: Bench, stream: Sequence[Request], run: int) -> RunResult:
    pool, cfg = bench.pool, bench.cfg
    assert pool is not None
    run_id = uuid.uuid4().hex
    await pg_load(pool, run_id)

    async def call(request: Request) -> Held | None:
        async with pool.acquire() as conn:
            if request.seats:
                return await pg_hold_seats(conn, run_id, request)
            return await pg_hold_quantity(conn, run_id, request)

    try:
        tally = await drive(
            stream[: cfg.baseline_requests], cfg.callers, call,
            think_s=cfg.think_ms / 1000, seed=cfg.seed, time_box_s=cfg.baseline_seconds,
        )  # fmt: skip
        oversell = await pg_oversell(pool, run_id, tally.held)
    finally:
        await pg_unload(pool, run_id)
    return result_of("baseline", run, tally, oversell)


# ---------------------------------------------------------------- servers


def host_of(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.hostname}:{parts.port}" if parts.port else str(parts.hostname)


@dataclass
class Servers:
    redis_url: str = ""
    pg_dsn: str | None = None  # None: the baseline is not run
    where: dict[str, str] = field(default_factory=dict)  # "redis"/"postgres" -> description
    versions: dict[str, str] = field(default_factory=dict)


def start_servers(cfg: argparse.Namespace, tmp: Path, stack: contextlib.ExitStack) -> Servers:
    """The URLs from the environment, or embedded servers stopped when ``stack`` closes."""
    servers = Servers()
    url = os.environ.get("ONSALE_REDIS_URL")
    if url:
        servers.where["redis"] = f"at {host_of(url)} from ONSALE_REDIS_URL"
    else:
        valkey = EmbeddedValkey(tmp / "valkey")
        stack.callback(valkey.stop)  # before start: a half-started server is stopped too
        url = valkey.start()
        servers.where["redis"] = f"embedded at {host_of(url)}"
    servers.redis_url = url
    if "baseline" not in cfg.modes:
        return servers
    url = os.environ.get("ONSALE_DATABASE_URL")
    if url:
        prefix = "postgresql+asyncpg://"  # SQLAlchemy's form; asyncpg wants postgresql://
        if url.startswith(prefix):
            url = "postgresql://" + url[len(prefix) :]
        servers.where["postgres"] = f"at {host_of(url)} from ONSALE_DATABASE_URL"
    else:
        postgres = EmbeddedPostgres(tmp / "pg")
        stack.callback(postgres.stop)
        url = postgres.start()
        servers.where["postgres"] = f"embedded at {host_of(url)}"
    servers.pg_dsn = url
    return servers


@contextlib.contextmanager
def running_servers(cfg: argparse.Namespace) -> Iterator[Servers]:
    """:func:`start_servers`, and Ray when the engine mode runs; all stopped on exit
    (Ray first), and the embedded servers' data directory removed."""
    with (
        tempfile.TemporaryDirectory(prefix="onsale-bench-", ignore_cleanup_errors=True) as tmp,
        contextlib.ExitStack() as stack,
    ):
        servers = start_servers(cfg, Path(tmp), stack)
        if "engine" in cfg.modes:
            runtime.connect()
            stack.callback(runtime.disconnect)
        yield servers


# ---------------------------------------------------------------- orchestration

RUNNERS: dict[str, Callable[[Bench, Sequence[Request], int], Awaitable[RunResult]]] = {
    "engine": run_engine,
    "raw": run_raw,
    "baseline": run_baseline,
}


async def open_bench(cfg: argparse.Namespace, redis_url: str, pg_dsn: str | None) -> Bench:
    scripts = InventoryScripts(Redis.from_url(redis_url))
    client = EngineClient(redis_url) if "engine" in cfg.modes else None
    pool = None
    if pg_dsn is not None:
        size = cfg.pg_connections
        pool = await asyncpg.create_pool(pg_dsn, min_size=size, max_size=size)
        async with pool.acquire() as conn:
            await conn.execute(PG_SCHEMA)
    return Bench(cfg, client, scripts, pool)


async def close_bench(bench: Bench) -> None:
    if bench.pool is not None:
        await bench.pool.close()
    if bench.client is not None:
        await bench.client.aclose()
    await bench.scripts.redis.aclose()


async def server_versions(bench: Bench) -> dict[str, str]:
    info = await bench.scripts.redis.info("server")
    name = "valkey" if "valkey_version" in info else "redis"
    versions = {"redis": f"{name} {info.get(f'{name}_version', '?')}"}
    if bench.pool is not None:
        versions["postgres"] = f"postgres {await bench.pool.fetchval('SHOW server_version')}"
    return versions


async def run_all(cfg: argparse.Namespace, servers: Servers, console: Console) -> list[RunResult]:
    stream = build_stream(cfg.requests, cfg.seed)
    bench = await open_bench(cfg, servers.redis_url, servers.pg_dsn)
    try:
        servers.versions = await server_versions(bench)
        header(cfg, servers, console)
        if cfg.warmup:
            # Unreported: first Lua loads (NOSCRIPT), Ray's driver paths, and the
            # statements asyncpg prepares on each pooled connection.
            for mode in cfg.modes:
                await RUNNERS[mode](bench, stream[: cfg.warmup], 0)
        results = []
        for run in range(1, cfg.repeat + 1):
            for mode in cfg.modes:  # interleaved, so drift on the machine hits every mode
                result = await RUNNERS[mode](bench, stream, run)
                console.print(f"[dim]run {run} {progress_line(result)}[/dim]")
                results.append(result)
        return results
    finally:
        await close_bench(bench)
