"""``onsale bench writer``: the outbox writer against a single-row insert loop.

Fills an event's outbox with ``--orders`` confirmed sales (80 % general
admission of 1-4 tickets, 20 % 1-4 seats), then persists them twice, side by
side on the same Postgres:

writer
    :class:`~persistence.writer.OutboxWriter` at each ``--batch-sizes`` value,
    with each ``--consumers`` count (consumers in one process, as
    ``onsale writer`` runs them): one transaction per batch, acknowledged
    after commit.
single-row loop
    The same entries, one transaction per order (its INSERT and its tickets'),
    the way a naive consumer would: the reference the writer is measured against.

Each is run ``--repeat`` times on a fresh event; medians and ratios are printed.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import tempfile
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

# isort: split
import ray
from redis.asyncio import Redis
from rich.console import Console
from rich.table import Table
from sqlalchemy.ext.asyncio import AsyncEngine

from api.settings import Settings
from api.supervisor import embedded_stack
from engine.client import EngineClient
from engine.model import ConfirmHold, GeneralSection, HoldQuantity, HoldSeats
from engine.scripts import EventKeys, InventoryScripts
from persistence.db import create_engine
from persistence.events import EventDraft, SectionSpec
from persistence.writer import OutboxWriter, decode_entry, write_entries
from sales import catalog
from sales.vocabulary import SectionKind

SECTIONS = [
    SectionSpec("A", "Stalls", 5000, SectionKind.SEATED, rows=100, seats_per_row=100),
    SectionSpec("GA", "Floor", 3000, SectionKind.GENERAL, capacity=200_000),
]


@dataclass
class Figure:
    mode: str
    orders: int
    seconds: float

    @property
    def per_s(self) -> float:
        return self.orders / self.seconds


async def fill_outbox(db: AsyncEngine, scripts: InventoryScripts, orders: int, seed: int) -> str:
    """A published event whose outbox holds ``orders`` confirmations."""
    event_id = f"bench-{uuid.uuid4().hex[:10]}"
    draft = EventDraft(  # no per-customer limit: the figures stay comparable
        name="Writer bench",
        venue="Bench",
        starts_at=datetime.now(UTC),
        currency="EUR",
        max_tickets_per_customer=0,
        max_held_per_customer=0,
    )
    await catalog.create_event(db, None, draft, SECTIONS, event_id=event_id, max_places=210_000)
    await catalog.put_on_sale(db, scripts, event_id)
    rng, next_seat = random.Random(seed), 0
    for start in range(0, orders, 500):
        commands: list[HoldSeats | HoldQuantity | ConfirmHold] = []
        for i in range(start, min(start + 500, orders)):
            hold_id, n = uuid.uuid4().hex, rng.randint(1, 4)
            if rng.random() < 0.2 and next_seat + n <= 10_000:
                seats = tuple(
                    f"A-{s // 100 + 1}-{s % 100 + 1}" for s in range(next_seat, next_seat + n)
                )
                next_seat += n
                commands.append(HoldSeats(hold_id, f"c{i}", seats, 600_000))
            else:
                commands.append(HoldQuantity(hold_id, f"c{i}", "GA", n, 600_000))
            commands.append(
                ConfirmHold(
                    hold_id, f"{event_id}-o{i}", {"amount_cents": 5000 * n, "currency": "EUR"}
                )
            )
        result = await scripts.apply(event_id, commands)
        assert all(r["ok"] for r in result.results), "filling the outbox failed"
    return event_id


async def run_writer(
    db: AsyncEngine,
    redis: Redis,
    scripts: InventoryScripts,
    orders: int,
    batch_size: int,
    consumers: int,
    seed: int,
) -> Figure:
    await fill_outbox(db, scripts, orders, seed)
    writers = [OutboxWriter(redis, db, batch_size=batch_size) for _ in range(consumers)]
    began = time.perf_counter()
    written = sum(await asyncio.gather(*(w.drain() for w in writers)))
    mode = f"writer batch {batch_size}" + (f" x{consumers} consumers" if consumers > 1 else "")
    figure = Figure(mode, written, time.perf_counter() - began)
    assert written == orders, f"writer recorded {written} of {orders}"
    return figure


async def run_single_rows(
    db: AsyncEngine, redis: Redis, scripts: InventoryScripts, orders: int, seed: int
) -> Figure:
    event_id = await fill_outbox(db, scripts, orders, seed)
    stream = EventKeys(event_id).outbox
    raw: Any = await redis.xrange(stream)
    entries = [decode_entry(stream, i, f) for i, f in raw]
    began = time.perf_counter()
    written = 0
    for entry in entries:
        async with db.begin() as conn:
            written += await write_entries(conn, [entry], copy=False)
    return Figure("single-row loop", written, time.perf_counter() - began)


async def run_engine_sales(redis: Redis, redis_url: str, sales: int, callers: int) -> Figure:
    """Sales per second through the engine (hold, then confirm), 1,000 callers:
    the rate the writer has to keep up with."""
    client = EngineClient(redis_url)
    event_id = f"bench-{uuid.uuid4().hex[:10]}"
    await client.load_inventory(event_id, [GeneralSection("GA", 4 * sales)])
    pending = iter(range(sales))

    async def caller() -> None:
        for i in pending:
            hold = await client.hold_quantity(event_id, f"c{i}", "GA", 2, ttl_s=600)
            await client.confirm(event_id, hold.hold_id, f"{event_id}-o{i}")

    try:
        began = time.perf_counter()
        await asyncio.gather(*(caller() for _ in range(callers)))
        return Figure("engine sales (hold + confirm)", sales, time.perf_counter() - began)
    finally:
        ray.kill(client.actor(event_id), no_restart=True)
        await redis.unlink(*EventKeys(event_id).mutation_keys())
        await client.aclose()


async def bench(cfg: argparse.Namespace, redis_url: str, database_url: str) -> list[Figure]:
    redis = Redis.from_url(redis_url)
    db = create_engine(database_url)
    scripts = InventoryScripts(redis)
    figures: list[Figure] = []
    try:
        for run in range(cfg.repeat):
            for size in cfg.batch_sizes:
                for consumers in cfg.consumers:
                    figures.append(
                        await run_writer(db, redis, scripts, cfg.orders, size, consumers, run)
                    )
            figures.append(await run_single_rows(db, redis, scripts, cfg.single_orders, run))
            figures.append(await run_engine_sales(redis, redis_url, cfg.orders, cfg.callers))
    finally:
        await redis.aclose()
        await db.dispose()
    return figures


def report(cfg: argparse.Namespace, figures: list[Figure]) -> None:
    console = Console()
    table = Table(
        title=f"orders persisted per second, median of {cfg.repeat} "
        f"({cfg.orders:,} orders per writer run)"
    )
    for column in ("mode", "orders/s", "runs"):
        table.add_column(column, justify="left" if column == "mode" else "right")
    medians: dict[str, float] = {}
    for mode in dict.fromkeys(f.mode for f in figures):
        rates = [f.per_s for f in figures if f.mode == mode]
        medians[mode] = statistics.median(rates)
        table.add_row(mode, f"{medians[mode]:,.0f}", " / ".join(f"{r:,.0f}" for r in rates))
    console.print(table)
    single = medians.pop("single-row loop")
    engine_rate = medians.pop("engine sales (hold + confirm)")
    for mode, rate in medians.items():
        console.print(
            f"{mode} / engine sales = {rate / engine_rate:.2f} "
            f"({'keeps up' if rate >= engine_rate else 'falls behind at peak'})"
        )
    for mode, rate in medians.items():
        verdict = "PASS" if rate >= 10 * single else "MISS"
        console.print(f"{mode} / single-row loop = {rate / single:.1f}x (target >= 10x) {verdict}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="onsale bench writer",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--orders", type=int, default=20_000, help="orders per writer run")
    parser.add_argument(
        "--single-orders",
        type=int,
        default=2_000,
        help="orders for the single-row loop (it is slow)",
    )
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[500, 2000])
    parser.add_argument(
        "--consumers", type=int, nargs="+", default=[1, 2], help="writers in one process"
    )
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--callers", type=int, default=1000, help="engine sales: callers")
    cfg = parser.parse_args(argv)
    with (
        tempfile.TemporaryDirectory() as tmp,
        embedded_stack(Settings(data_dir=Path(tmp)), with_ray=False) as ready,
    ):
        figures = asyncio.run(bench(cfg, ready.redis_url or "", ready.database_url or ""))
    report(cfg, figures)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
