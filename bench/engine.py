"""``onsale bench engine``: the engine against its raw ceiling and a Postgres baseline.

One hot event (50,000 general-admission tickets and a 10,000-seat seated
section) and one deterministic stream of hold requests, given to three modes:

engine
    ``--callers`` asyncio tasks calling one :class:`~engine.client.EngineClient`
    (coalescer -> Ray actor -> ``batch.lua``), the way the API does.
raw
    The same requests straight to Redis, one ``hold.lua`` call per request,
    pipelined (:meth:`InventoryScripts.apply_one_pipelined`): the ceiling of
    the scripts themselves, without Ray or coalescing.
baseline
    What typical ticketing backends do: one Postgres transaction per hold
    (a guarded ``UPDATE … stock >= n`` for GA, ``SELECT … FOR UPDATE`` on the
    seat rows for seated), through a pool of ``--pg-connections``.

Modes run interleaved ``--repeat`` times on fresh inventory; the report shows
medians, each run's figures, the engine/raw and engine/baseline ratios, and the
oversell found by reconciling every success with the final state (must be 0).
Exit status: 0, or 1 if any mode oversold or had failures (errors that are not
a sold-out or seats-unavailable answer).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import platform
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import ray
from redis.asyncio import Redis
from rich.console import Console
from rich.table import Table

from bench.pg_baseline import (
    PG_SCHEMA,
    pg_hold_quantity,
    pg_hold_seats,
    pg_load,
    pg_oversell,
    pg_unload,
)
from bench.workload import (
    GA_CAPACITY,
    GA_CODE,
    MODES,
    ROWS,
    SEATS_PER_ROW,
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
TARGET_RAW_RATIO, TARGET_BASELINE_RATIO, TARGET_P99_MS = 0.5, 50.0, 25.0


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


# ---------------------------------------------------------------- report


def progress_line(r: RunResult) -> str:
    return (
        f"{r.mode:<8} {r.holds_per_s:>9,.0f} holds/s  p50 {r.p50_ms:6.1f} ms  "
        f"p99 {r.p99_ms:6.1f} ms  answered {r.answered:,}  oversell {r.oversell}"
    )


def summarize(results: Sequence[RunResult]) -> dict[str, dict[str, float]]:
    """Medians per mode; failures and oversell summed, so one bad run shows."""
    summary: dict[str, dict[str, float]] = {}
    for mode in MODES:
        runs = [r for r in results if r.mode == mode]
        if not runs:
            continue
        summary[mode] = {
            name: statistics.median(getattr(r, name) for r in runs)
            for name in ("holds_per_s", "p50_ms", "p99_ms", "answered", "successes", "refused",
                         "tickets")
        }  # fmt: skip
        summary[mode]["failures"] = sum(r.failures for r in runs)
        summary[mode]["oversell"] = sum(r.oversell for r in runs)
    return summary


def ratios(summary: dict[str, dict[str, float]]) -> dict[str, float]:
    out = {}
    engine_rate = summary.get("engine", {}).get("holds_per_s")
    for other in ("raw", "baseline"):
        other_rate = summary.get(other, {}).get("holds_per_s")
        if engine_rate is not None and other_rate:
            out[f"engine/{other}"] = engine_rate / other_rate
    return out


def machine() -> dict[str, Any]:
    model = platform.processor()
    with contextlib.suppress(OSError):  # Linux: the CPU's marketing name
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {
        "node": platform.node(),
        "cores": os.cpu_count(),
        "cpu": model or "?",
        "python": platform.python_version(),
        "ray": ray.__version__,
    }


def header(cfg: argparse.Namespace, servers: Servers, console: Console) -> None:
    m = machine()
    console.print(
        f"[bold]onsale bench engine[/bold] — {m['node']}: {m['cores']} cores ({m['cpu']}), "
        f"Python {m['python']}, Ray {m['ray']}"
    )
    where = [f"{servers.versions.get(k, k)} {w}" for k, w in servers.where.items()]
    console.print(f"servers: {'; '.join(where)}")
    console.print(
        f"one event: GA {GA_CAPACITY:,} tickets + seated {ROWS}x{SEATS_PER_ROW}; "
        f"{cfg.requests:,} requests (80 % GA 1-4, 20 % 1-4 adjacent seats, seed {cfg.seed}), "
        f"{cfg.callers:,} callers, think {cfg.think_ms:g} ms; repeat {cfg.repeat}, "
        f"warm-up {cfg.warmup:,}; modes {', '.join(cfg.modes)}"
    )
    console.print(
        f"raw: {cfg.raw_workers} workers x pipelines of {cfg.pipeline}; baseline: "
        f"{cfg.pg_connections} connections, first {cfg.baseline_requests:,} requests "
        f"or {cfg.baseline_seconds:g} s"
    )


def results_table(summary: dict[str, dict[str, float]]) -> Table:
    table = Table(title="medians over runs (failures and oversell: totals over runs)")
    for column in ("mode", "holds/s", "p50 ms", "p99 ms", "answered", "successes", "refused",
                   "tickets held", "failures", "oversell"):  # fmt: skip
        table.add_column(column, justify="left" if column == "mode" else "right")
    for mode, s in summary.items():
        oversell = f"[{'green' if s['oversell'] == 0 else 'bold red'}]{s['oversell']:.0f}[/]"
        table.add_row(
            mode, f"{s['holds_per_s']:,.0f}", f"{s['p50_ms']:.1f}", f"{s['p99_ms']:.1f}",
            f"{s['answered']:,.0f}", f"{s['successes']:,.0f}", f"{s['refused']:,.0f}",
            f"{s['tickets']:,.0f}", f"{s['failures']:.0f}", oversell,
        )  # fmt: skip
    return table


def verdict(ok: bool) -> str:
    return "[bold green]PASS[/]" if ok else "[bold red]MISS[/]"


def print_runs(results: Sequence[RunResult], console: Console) -> None:
    for mode in MODES:
        runs = [r for r in results if r.mode == mode]
        if not runs:
            continue
        each_rate = " / ".join(f"{r.holds_per_s:,.0f}" for r in runs)
        each_p99 = " / ".join(f"{r.p99_ms:.1f}" for r in runs)
        line = f"{mode:<8} runs: {each_rate} holds/s · p99 {each_p99} ms"
        if mode == "engine":
            per_batch = [r.extra["ops"] / max(1, r.extra["batches"]) for r in runs]
            line += f" · ops per actor batch {' / '.join(f'{b:.0f}' for b in per_batch)}"
        console.print(line)
        for r in runs:
            if r.first_failure:
                console.print(f"[red]{mode} run {r.run}: first failure: {r.first_failure}[/]")


def print_targets(
    summary: dict[str, dict[str, float]], cfg: argparse.Namespace, console: Console
) -> dict[str, bool]:
    rates = ratios(summary)
    checks: dict[str, bool] = {}
    if "engine/raw" in rates:
        value = rates["engine/raw"]
        checks["engine/raw"] = value >= TARGET_RAW_RATIO
        line = f"engine/raw = {value:.2f} (target ≥ {TARGET_RAW_RATIO})"
        console.print(f"{line} {verdict(checks['engine/raw'])}")
    if "engine/baseline" in rates:
        value = rates["engine/baseline"]
        checks["engine/baseline"] = value >= TARGET_BASELINE_RATIO
        line = f"engine/baseline = {value:.1f} (target ≥ {TARGET_BASELINE_RATIO:g})"
        console.print(f"{line} {verdict(checks['engine/baseline'])}")
    if "engine" in summary:
        value = summary["engine"]["p99_ms"]
        checks["p99"] = value <= TARGET_P99_MS
        line = f"p99 engine = {value:.1f} ms (target ≤ {TARGET_P99_MS:g} ms)"
        console.print(f"{line} {verdict(checks['p99'])}")
        if not cfg.think_ms:  # Little's law: what no closed loop can beat on average
            floor = cfg.callers / summary["engine"]["holds_per_s"] * 1000
            console.print(
                f"[dim]  closed loop: {cfg.callers:,} callers / "
                f"{summary['engine']['holds_per_s']:,.0f} holds/s = {floor:.1f} ms mean latency "
                "by Little's law; --think-ms N shows latency at an offered load[/dim]"
            )
    checks["oversell"] = all(s["oversell"] == 0 for s in summary.values())
    oversold = ", ".join(f"{m} {s['oversell']:.0f}" for m, s in summary.items())
    console.print(f"oversell: {oversold} (target 0) {verdict(checks['oversell'])}")
    return checks


def report(
    results: Sequence[RunResult], cfg: argparse.Namespace, console: Console
) -> dict[str, Any]:
    summary = summarize(results)
    console.print(results_table(summary))
    print_runs(results, console)
    checks = print_targets(summary, cfg, console)
    return {"medians": summary, "ratios": ratios(summary), "checks": checks}


def write_json(path: Path, payload: dict[str, Any]) -> None:
    def clean(value: Any) -> Any:  # NaN (a mode with no answers) is not JSON
        if isinstance(value, float) and value != value:
            return None
        if isinstance(value, dict):
            return {k: clean(v) for k, v in value.items()}
        if isinstance(value, list):
            return [clean(v) for v in value]
        return value

    path.write_text(json.dumps(clean(payload), indent=2) + "\n", encoding="utf-8")


# ---------------------------------------------------------------- entry point


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="onsale bench engine", description=__doc__.split("\n")[0])
    p.add_argument("--requests", type=int, default=20_000, help="hold requests per run")
    p.add_argument("--callers", type=int, default=1000, help="concurrent callers")
    p.add_argument("--repeat", type=int, default=3, help="interleaved runs; medians reported")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument(
        "--think-ms", type=float, default=0.0, help="mean pause of each caller between requests"
    )
    p.add_argument("--pipeline", type=int, default=200, help="raw: commands per pipeline")
    p.add_argument("--raw-workers", type=int, default=4, help="raw: concurrent pipelines")
    p.add_argument("--pg-connections", type=int, default=100, help="baseline: pool size")
    p.add_argument("--baseline-requests", type=int, default=4000, help="baseline: stream prefix")
    p.add_argument("--baseline-seconds", type=float, default=20.0, help="baseline: time box")
    p.add_argument("--warmup", type=int, default=1000, help="unreported requests per mode first")
    p.add_argument(
        "--modes", default=",".join(MODES), help="comma-separated subset of engine,raw,baseline"
    )
    p.add_argument("--json", type=Path, metavar="PATH", help="also write every figure as JSON")
    cfg = p.parse_args(argv)
    cfg.modes = [m for m in MODES if m in cfg.modes.split(",")]
    if not cfg.modes:
        p.error("--modes names none of engine, raw, baseline")
    if min(cfg.requests, cfg.callers, cfg.repeat, cfg.pipeline, cfg.raw_workers) < 1:
        p.error("--requests, --callers, --repeat, --pipeline and --raw-workers must be ≥ 1")
    return cfg


def main(argv: list[str] | None = None) -> int:
    cfg = parse_args(argv)
    console = Console()
    if not console.is_terminal:  # piped or captured: rich would assume 80 columns
        console = Console(width=120)
    logging.getLogger("ray").setLevel(logging.ERROR)  # start-up notices, not results
    with (
        tempfile.TemporaryDirectory(prefix="onsale-bench-", ignore_cleanup_errors=True) as tmp,
        contextlib.ExitStack() as stack,
    ):
        servers = start_servers(cfg, Path(tmp), stack)
        if "engine" in cfg.modes:
            runtime.connect()
            stack.callback(runtime.disconnect)
        results = asyncio.run(run_all(cfg, servers, console))
    outcome = report(results, cfg, console)
    if cfg.json:
        params = {k: str(v) if isinstance(v, Path) else v for k, v in vars(cfg).items()}
        servers_json = {"where": servers.where, "versions": servers.versions}
        payload = {"machine": machine(), "servers": servers_json, "params": params}
        write_json(cfg.json, {**payload, "runs": [asdict(r) for r in results], **outcome})
    return 1 if any(r.oversell or r.failures for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
