"""``onsale simulate --event ID --users N``: N virtual buyers race for one
event through the public API, as a crowd at an on-sale would.

Each buyer signs up (``POST /auth/register``), looks at the seat map, tries to
hold one or two seats it saw free (or GA places), tries again with other seats
when beaten to them, checks out (``POST /orders``) and, with ``--pay``, pays
through Stripe's API in test mode (localstripe under ``make up``). A progress
bar follows the race; the table at the end gives holds won and lost, orders
created and paid, latency percentiles per step, and the oversell check: no
seat won twice, no section holding or selling more than its capacity (as the
buyers saw it, and as ``GET /events/{id}/availability`` says), and, when
``ONSALE_DATABASE_URL`` is set, no seat with two valid tickets in Postgres.

Run the server with ``ONSALE_RATE_LIMITS=off`` to see the race rather than the
rate limiter: from one address the default global limit answers 429 early.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import time
import uuid
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import httpx
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from sales.testmode import pay_with_card, stripe_client

PASSWORD = "simulated buyer password"


@dataclass
class Tally:
    holds_won: int = 0
    holds_lost: int = 0
    gave_up: int = 0
    orders: int = 0
    paid: int = 0
    rate_limited: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    latency_ms: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    seats_won: Counter[str] = field(default_factory=Counter)
    places_won: Counter[str] = field(default_factory=Counter)


class Buyer:
    def __init__(self, http: httpx.AsyncClient, event: dict[str, Any], tally: Tally) -> None:
        self.http, self.event, self.tally = http, event, tally
        self.auth: dict[str, str] = {}

    async def call(self, step: str, method: str, path: str, **kw: Any) -> httpx.Response:
        began = time.perf_counter()
        r = await self.http.request(
            method, path, headers={**self.auth, **kw.pop("headers", {})}, **kw
        )
        self.tally.latency_ms[step].append((time.perf_counter() - began) * 1000)
        if r.status_code == 429:
            self.tally.rate_limited += 1
        elif r.status_code >= 500 or r.status_code in (400, 401, 403, 422):
            self.tally.errors[f"{step} {r.status_code}"] += 1
        return r

    async def sign_up(self, n: int) -> None:
        email = f"sim-{uuid.uuid4().hex[:12]}-{n}@example.com"
        r = await self.call(
            "register", "POST", "/auth/register",
            json={"email": email, "password": PASSWORD, "name": f"Buyer {n}"},
        )  # fmt: skip
        if r.status_code == 201:
            self.auth = {"Authorization": f"Bearer {r.json()['access_token']}"}

    async def race(self, rng: random.Random, attempts: int, pay: Any) -> None:
        if not self.auth:
            return
        event_id = self.event["id"]
        for _ in range(attempts):
            body = await self.choose(rng)
            if body is None:
                break  # nothing left to try for
            r = await self.call(
                "hold", "POST", f"/events/{event_id}/holds", json=body,
                headers={"Idempotency-Key": uuid.uuid4().hex},
            )  # fmt: skip
            if r.status_code == 201:
                self.tally.holds_won += 1
                hold = r.json()
                for seat in hold.get("seats") or []:
                    self.tally.seats_won[seat] += 1
                if hold.get("section") and not hold.get("seats"):
                    self.tally.places_won[hold["section"]] += hold["quantity"]
                await self.check_out(hold, pay)
                return
            self.tally.holds_lost += 1
            if r.status_code not in (409, 429):
                break
        self.tally.gave_up += 1

    async def choose(self, rng: random.Random) -> dict[str, Any] | None:
        seated = [s for s in self.event["sections"] if s["kind"] == "seated"]
        general = [s for s in self.event["sections"] if s["kind"] == "general"]
        if seated and (not general or rng.random() < 0.7):
            r = await self.call("seat map", "GET", f"/events/{self.event['id']}/seats")
            free = [s["id"] for s in r.json().get("seats", []) if s["status"] == "available"]
            if free:
                return {"seats": rng.sample(free, min(len(free), rng.randint(1, 2)))}
        r = await self.call("availability", "GET", f"/events/{self.event['id']}/availability")
        open_ = [
            s for s in r.json().get("sections", []) if s["kind"] == "general" and s["available"]
        ]
        if not open_:
            return None
        section = rng.choice(open_)
        return {
            "section": section["code"],
            "quantity": min(section["available"], rng.randint(1, 2)),
        }

    async def check_out(self, hold: dict[str, Any], pay: Any) -> None:
        r = await self.call(
            "order", "POST", "/orders", json={"hold_id": hold["hold_id"]},
            headers={"Idempotency-Key": uuid.uuid4().hex},
        )  # fmt: skip
        if r.status_code != 201:
            return
        self.tally.orders += 1
        if pay is not None:
            began = time.perf_counter()
            status = await asyncio.to_thread(pay, r.json()["payment"]["payment_intent_id"])
            self.tally.latency_ms["pay"].append((time.perf_counter() - began) * 1000)
            self.tally.paid += status == "succeeded"


def stripe_payer(api_key: str, api_base: str | None) -> Any:
    client = stripe_client(api_key, api_base)
    return lambda intent_id: pay_with_card(client, intent_id)


async def simulate(cfg: argparse.Namespace, console: Console) -> tuple[Tally, dict[str, Any]]:
    tally = Tally()
    rng = random.Random(cfg.seed)
    limits = httpx.Limits(max_connections=cfg.connections)
    async with httpx.AsyncClient(base_url=cfg.base_url, timeout=60, limits=limits) as http:
        r = await http.get(f"/events/{cfg.event}")
        if r.status_code != 200:
            raise SystemExit(f"no event {cfg.event} at {cfg.base_url}: {r.status_code} {r.text}")
        event = r.json()
        buyers = [Buyer(http, event, tally) for _ in range(cfg.users)]
        pay = stripe_payer(cfg.stripe_key, cfg.stripe_api_base) if cfg.pay else None
        columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                   TimeElapsedColumn())  # fmt: skip
        with Progress(*columns, console=console) as progress:
            task = progress.add_task("signing up", total=cfg.users)

            async def sign_up(i: int, buyer: Buyer) -> None:
                await buyer.sign_up(i)
                progress.advance(task)

            await asyncio.gather(*(sign_up(i, b) for i, b in enumerate(buyers)))
            race = progress.add_task("racing", total=cfg.users)
            start = asyncio.Event()

            async def run(buyer: Buyer) -> None:
                await start.wait()
                await buyer.race(random.Random(rng.random()), cfg.attempts, pay)
                progress.advance(race)

            tasks = [asyncio.ensure_future(run(b)) for b in buyers]
            await asyncio.sleep(0)
            start.set()
            await asyncio.gather(*tasks)
        availability = (await http.get(f"/events/{cfg.event}/availability")).json()
    return tally, {"event": event, "availability": availability}


async def postgres_double_sales(database_url: str, event_id: str) -> int:
    conn = await asyncpg.connect(database_url.replace("+asyncpg", ""))
    try:
        return int(
            await conn.fetchval(
                """SELECT count(*) FROM (SELECT seat_id FROM tickets
                   WHERE event_id = $1 AND seat_id IS NOT NULL AND status = 'valid'
                   GROUP BY seat_id HAVING count(*) > 1) doubled""",
                event_id,
            )
        )
    finally:
        await conn.close()


def report(cfg: argparse.Namespace, tally: Tally, seen: dict[str, Any], console: Console) -> bool:
    table = Table(title=f"{cfg.users:,} buyers for event {cfg.event}")
    table.add_column("", justify="left")
    table.add_column("", justify="right")
    rows = [
        ("holds won", tally.holds_won), ("holds lost (409)", tally.holds_lost),
        ("buyers who gave up", tally.gave_up), ("orders created", tally.orders),
        ("orders paid", tally.paid if cfg.pay else "-"), ("rate limited (429)", tally.rate_limited),
        ("errors", sum(tally.errors.values())),
    ]  # fmt: skip
    for name, value in rows:
        table.add_row(name, f"{value:,}" if isinstance(value, int) else value)
    console.print(table)
    steps = Table(title="latency per step (ms)")
    for column in ("step", "requests", "p50", "p95", "p99"):
        steps.add_column(column, justify="left" if column == "step" else "right")
    for step, values in tally.latency_ms.items():
        ordered = sorted(values)
        p95, p99 = (ordered[min(len(ordered) - 1, int(q * len(ordered)))] for q in (0.95, 0.99))
        steps.add_row(step, f"{len(values):,}", f"{statistics.median(values):.0f}",
                      f"{p95:.0f}", f"{p99:.0f}")  # fmt: skip
    console.print(steps)
    if tally.errors:
        console.print("errors:", dict(tally.errors))

    doubled = [seat for seat, n in tally.seats_won.items() if n > 1]
    capacities = {s["code"]: s["capacity"] for s in seen["event"]["sections"]}
    over_ga = {c: n for c, n in tally.places_won.items() if n > capacities.get(c, 0)}
    over_api = [s["code"] for s in seen["availability"]["sections"]
                if s["held"] + s["sold"] > s["capacity"] or s["available"] < 0]  # fmt: skip
    checks = {
        "no seat won twice": not doubled,
        "no GA section over capacity (as won)": not over_ga,
        "no section over capacity (API)": not over_api,
    }
    if cfg.database_url:
        checks["no seat with two valid tickets (Postgres)"] = (
            asyncio.run(postgres_double_sales(cfg.database_url, cfg.event)) == 0
        )
    for name, ok in checks.items():
        console.print(f"  {name}: {'ok' if ok else 'OVERSOLD'}")
    return all(checks.values())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="onsale simulate", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    host, port = os.environ.get("ONSALE_HOST", "127.0.0.1"), os.environ.get("ONSALE_PORT", "8000")
    parser.add_argument("--event", required=True, help="the event id (e.g. demo)")
    parser.add_argument("--users", type=int, default=1000)
    parser.add_argument("--base-url", default=f"http://{host}:{port}")
    parser.add_argument(
        "--attempts", type=int, default=3, help="holds a buyer tries before giving up"
    )
    parser.add_argument("--connections", type=int, default=500)
    parser.add_argument("--pay", action="store_true", help="pay every order (Stripe test mode)")
    parser.add_argument("--stripe-key", default=os.environ.get("STRIPE_SECRET_KEY", ""))
    parser.add_argument("--stripe-api-base", default=os.environ.get("ONSALE_STRIPE_API_BASE"))
    parser.add_argument("--database-url", default=os.environ.get("ONSALE_DATABASE_URL"))
    parser.add_argument("--seed", type=int, default=1)
    cfg = parser.parse_args(argv)
    if cfg.pay and not cfg.stripe_key:
        parser.error("--pay needs STRIPE_SECRET_KEY (and ONSALE_STRIPE_API_BASE for localstripe)")
    console = Console()
    tally, seen = asyncio.run(simulate(cfg, console))
    return 0 if report(cfg, tally, seen, console) else 1


if __name__ == "__main__":
    raise SystemExit(main())
