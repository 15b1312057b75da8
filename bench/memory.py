"""`onsale bench memory`: what 100,000 sold orders cost Redis, and for how long.

On a fresh embedded Valkey, one event of general admission sells ``--orders``
orders the way the API does it: a hold, its order (checkout, with the
lookups the API keeps beside it: the PaymentIntent's order, the orders
awaiting payment, the buyer's recent orders) and the sale, all through the
engine's scripts in batches. Redis's own ``used_memory`` is read before, with
every outbox entry still waiting for the writer, and after the writer would
have taken them (the stream trimmed), and the figures are printed per 100,000
orders beside how long each kind of record is kept.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from redis.asyncio import Redis
from rich.console import Console
from rich.table import Table

from engine.model import ConfirmHold, GeneralSection, HoldQuantity, PlaceOrder
from engine.scripts import EventKeys, InventoryScripts
from persistence.embedded import EmbeddedValkey
from sales import lookups

BATCH = 500
ITEMS = ({"section": "GA", "quantity": 2, "price_cents": 3000},)


async def used(redis: Redis) -> int:
    return int((await redis.info("memory"))["used_memory"])


async def sell(redis: Redis, orders: int) -> dict[str, Any]:
    scripts = InventoryScripts(redis)
    event_id = uuid.uuid4().hex[:12]
    await scripts.load_inventory(event_id, [GeneralSection("GA", orders * 2)])
    before = await used(redis)
    began = time.perf_counter()
    for start in range(0, orders, BATCH):
        count = min(BATCH, orders - start)
        holds = [f"hl_{uuid.uuid4().hex[:24]}.{event_id}" for _ in range(count)]
        until = int(time.time() * 1000) + 900_000
        commands: list[Any] = [HoldQuantity(h, f"c{start + i}", "GA", 2, 600_000, "fp")
                               for i, h in enumerate(holds)]  # fmt: skip
        commands += [
            PlaceOrder(h, f"c{start + i}", "or_" + h[3:], until, 6000, "EUR", ITEMS,
                       f"pi_{uuid.uuid4().hex[:24]}", "stripe")
            for i, h in enumerate(holds)
        ]  # fmt: skip
        commands += [ConfirmHold(h, "or_" + h[3:], {"amount_cents": 6000}) for h in holds]
        await scripts.apply(event_id, commands)
        for i, h in enumerate(holds):
            await lookups.remember_checkout(
                redis, order_id="or_" + h[3:], customer_id=f"c{start + i}",
                intent_id=f"pi_{h[3:27]}", created_ms=until - 900_000, expires_ms=until,
            )  # fmt: skip
            await lookups.settled(redis, "or_" + h[3:])
    with_outbox = await used(redis)
    # exact: "~" trims at most 10,000 entries a call (100 nodes of 100)
    await redis.xtrim(EventKeys(event_id).outbox, maxlen=0, approximate=False)
    assert await redis.xlen(EventKeys(event_id).outbox) == 0  # what the writer leaves
    written = await used(redis)
    return {
        "orders": orders,
        "seconds": time.perf_counter() - began,
        "with_outbox_bytes": with_outbox - before,
        "after_writer_bytes": written - before,
    }


RETENTION = [
    ("hold record with its order ({ev}:holds)", "until a day after the hold ended (sold, "
     "released or expired), then the writer's Postgres rows are the record"),
    ("refund marker ({ev}:holds refund:<order>)", "for good (a few bytes per refunded order)"),
    ("outbox entry ({ev}:outbox)", "until the writer has written it to Postgres"),
    ("PaymentIntent's order (onsale:intent:<pi>)", "40 days"),
    ("buyer's recent orders (onsale:orders-of:<customer>)", "7 days after the last order"),
    ("order awaiting payment (onsale:awaiting-payment)", "until paid, ended or past hope"),
    ("Stripe event handled (onsale:stripe-event:<id>)", "4 days (Stripe retries for 3)"),
    ("Idempotency-Key answers of other routes (onsale:idem:*)", "24 hours"),
]  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="onsale bench memory", description=__doc__)
    parser.add_argument("--orders", type=int, default=100_000)
    cfg = parser.parse_args(argv)
    console = Console()
    with tempfile.TemporaryDirectory() as tmp:
        valkey = EmbeddedValkey(Path(tmp) / "valkey")
        url = valkey.start()
        try:

            async def run() -> dict[str, Any]:
                redis = Redis.from_url(url)
                try:
                    return await sell(redis, cfg.orders)
                finally:
                    await redis.aclose()

            figures = asyncio.run(run())
        finally:
            valkey.stop()
    per = 100_000 / figures["orders"]
    table = Table(title=f"Redis memory for {figures['orders']:,} sold orders (2 places each)")
    table.add_column("state")
    table.add_column("MiB per 100,000 orders", justify="right")
    table.add_column("bytes per order", justify="right")
    for label, key in (("outbox not yet written", "with_outbox_bytes"),
                       ("after the writer", "after_writer_bytes")):  # fmt: skip
        table.add_row(label, f"{figures[key] * per / 2**20:,.1f}",
                      f"{figures[key] / figures['orders']:,.0f}")  # fmt: skip
    console.print(table)
    kept = Table(title="How long each kind of record is kept")
    kept.add_column("record")
    kept.add_column("kept")
    for record, how_long in RETENTION:
        kept.add_row(record, how_long)
    console.print(kept)
    console.print(f"sold in {figures['seconds']:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
