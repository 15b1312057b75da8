"""Did the run oversell? Postgres, the record of every sale, answers.

    .venv/bin/python locust/onsale_load/pgcheck.py --database-url URL --event ID \\
        [--api http://127.0.0.1:8000] [--paid-orders FILE] [--settle-s 60]

Prints one JSON object; exits 1 if anything is wrong. Confirmed sales reach
Postgres through the outbox writer, so it first waits (up to ``--settle-s``)
until the write-behind has caught up: every order in ``--paid-orders`` (a
JSON list of the order ids whose payment Stripe answered ``succeeded``) paid
here, and, with ``--api``, each section's ``sold`` in the live inventory
(Redis, read through GET /events/{id}/availability) equal to its valid
tickets here. Then:

- no seat has two valid tickets; no section has more valid tickets than its
  capacity; each section's ``sold`` counter equals its valid tickets;
- each paid order has as many valid tickets as its items ask for, and no other
  order has any; each paid order's payment succeeded.

Run as a separate process by the locustfile (asyncpg does not mix with the
gevent loop Locust runs on). ``--baseline-run`` checks the seed-style
baseline's table instead: holds never exceed the stock it started with.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import asyncpg

SEATS_SOLD_TWICE = """
SELECT seat_id, count(*) AS n FROM tickets
WHERE event_id = $1 AND seat_id IS NOT NULL AND status = 'valid'
GROUP BY seat_id HAVING count(*) > 1
"""
SECTIONS = """
SELECT s.code, s.kind, s.capacity, s.sold,
       count(t.id) FILTER (WHERE t.status = 'valid') AS valid
FROM sections s
LEFT JOIN tickets t ON t.event_id = s.event_id AND t.section_code = s.code
WHERE s.event_id = $1
GROUP BY s.code, s.kind, s.capacity, s.sold ORDER BY s.code
"""
ORDERS_BY_STATUS = "SELECT status, count(*) AS n FROM orders WHERE event_id = $1 GROUP BY status"
ORDERS_WRONG_TICKETS = """
SELECT o.id, o.status,
       (SELECT coalesce(sum((i->>'quantity')::int), 0)
        FROM jsonb_array_elements(coalesce(o.items, '[]'::jsonb)) i) AS wanted,
       count(t.id) FILTER (WHERE t.status = 'valid') AS valid
FROM orders o LEFT JOIN tickets t ON t.order_id = o.id
WHERE o.event_id = $1
GROUP BY o.id, o.status, o.items
HAVING (o.status = 'paid'
        AND count(t.id) FILTER (WHERE t.status = 'valid')
            <> (SELECT coalesce(sum((i->>'quantity')::int), 0)
                FROM jsonb_array_elements(coalesce(o.items, '[]'::jsonb)) i))
    OR (o.status <> 'paid' AND count(t.id) FILTER (WHERE t.status = 'valid') > 0)
LIMIT 20
"""
NOT_PAID_HERE = """
SELECT o.id, o.status, p.status AS payment FROM orders o
LEFT JOIN payments p ON p.order_id = o.id
WHERE o.id = ANY($1::text[]) AND o.status <> 'paid'
ORDER BY o.id LIMIT 20
"""
PAID_WITHOUT_PAYMENT = """
SELECT count(*) FROM orders o LEFT JOIN payments p ON p.order_id = o.id
WHERE o.event_id = $1 AND o.status = 'paid' AND p.status IS DISTINCT FROM 'succeeded'
"""
BASELINE = """
SELECT (SELECT stock FROM bench_sections WHERE run = $1 AND code = 'GA') AS stock,
       (SELECT coalesce(sum(quantity), 0) FROM bench_holds WHERE run = $1) AS held,
       (SELECT count(*) FROM bench_holds WHERE run = $1) AS holds
"""


async def snapshot(
    conn: asyncpg.Connection, event_id: str, paid_orders: list[str]
) -> dict[str, Any]:
    sections = [dict(r) for r in await conn.fetch(SECTIONS, event_id)]
    return {
        "sections": sections,
        "seats_sold_twice": [dict(r) for r in await conn.fetch(SEATS_SOLD_TWICE, event_id)],
        "over_capacity": [s["code"] for s in sections if s["valid"] > s["capacity"]],
        "sold_counter_off": [s["code"] for s in sections if s["sold"] != s["valid"]],
        "orders": {r["status"]: r["n"] for r in await conn.fetch(ORDERS_BY_STATUS, event_id)},
        "orders_wrong_tickets": [dict(r) for r in await conn.fetch(ORDERS_WRONG_TICKETS, event_id)],
        "paid_in_stripe_not_here": [dict(r) for r in await conn.fetch(NOT_PAID_HERE, paid_orders)],
        "paid_without_payment": await conn.fetchval(PAID_WITHOUT_PAYMENT, event_id),
    }


def live_sold(api: str, event_id: str) -> dict[str, int]:
    with urllib.request.urlopen(f"{api}/events/{event_id}/availability", timeout=10) as answer:
        return {s["code"]: s["sold"] for s in json.load(answer)["sections"]}


def caught_up(found: dict[str, Any]) -> bool:
    return not found["paid_in_stripe_not_here"] and not found.get("live_vs_postgres")


async def check(args: argparse.Namespace) -> dict[str, Any]:
    conn = await asyncpg.connect(args.database_url.replace("postgresql+asyncpg", "postgresql"))
    try:
        if args.baseline_run:
            row = dict(await conn.fetchrow(BASELINE, args.baseline_run))
            oversold = max(0, row["held"] - args.baseline_capacity) + max(0, -(row["stock"] or 0))
            return {**row, "capacity": args.baseline_capacity, "oversold": oversold,
                    "ok": row["stock"] is not None and oversold == 0
                    and row["held"] + row["stock"] == args.baseline_capacity}  # fmt: skip
        paid_orders = args.paid_order_ids
        began = time.monotonic()
        while True:
            found = await snapshot(conn, args.event, paid_orders)
            if args.api:
                live = await asyncio.to_thread(live_sold, args.api, args.event)
                found["live_sold"] = live
                found["live_vs_postgres"] = [
                    s["code"] for s in found["sections"] if live.get(s["code"]) != s["valid"]
                ]
            settled = caught_up(found)
            if settled or time.monotonic() - began > args.settle_s:
                break
            await asyncio.sleep(0.5)
    finally:
        await conn.close()
    found["settled"] = settled
    found["settle_s"] = round(time.monotonic() - began, 1)
    found["oversold"] = sum(max(0, s["valid"] - s["capacity"]) for s in found["sections"]) + sum(
        r["n"] - 1 for r in found["seats_sold_twice"]
    )
    found["ok"] = settled and not (
        found["oversold"]
        or found["over_capacity"]
        or found["sold_counter_off"]
        or found["orders_wrong_tickets"]
        or found["paid_without_payment"]
    )
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database-url", required=True)
    parser.add_argument("--event", required=True)
    parser.add_argument("--api", default="", help="the API, to compare live sold counts")
    parser.add_argument(
        "--paid-orders", default="", help="JSON list of the order ids paid in Stripe (-: stdin)"
    )
    parser.add_argument("--settle-s", type=float, default=60.0)
    parser.add_argument("--baseline-run", default="")
    parser.add_argument("--baseline-capacity", type=int, default=0)
    args = parser.parse_args(argv)
    paid = sys.stdin.read() if args.paid_orders == "-" else None
    if args.paid_orders and paid is None:
        paid = Path(args.paid_orders).read_text()
    args.paid_order_ids = json.loads(paid) if paid else []
    found = asyncio.run(check(args))
    print(json.dumps(found, default=str))
    return 0 if found["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
