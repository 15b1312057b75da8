"""A short Locust spike against a real server: 200 people in 4 s for one small
event, 30 s, the whole purchase (register, browse, hold, order, pay through
localstripe, release). It must end with Locust's exit code 0 (the scenario's
own verdict), no oversell in Postgres, some holds and some paid orders; and
the oversell check must see an oversell when one is written behind its back."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from api.seed import create_admin
from tests.conftest import LiveApi

pytestmark = pytest.mark.load

ROOT = Path(__file__).resolve().parents[1]
PGCHECK = ROOT / "locust" / "onsale_load" / "pgcheck.py"
USERS, SEATS, GA = 200, (10, 10), 150  # 250 places for 200 eager buyers: it sells out


def locust_spike(api: LiveApi, database_url: str, admin: tuple[str, str], out: Path) -> str:
    env = {
        **os.environ,
        "ONSALE_DATABASE_URL": database_url,
        "ONSALE_STRIPE_API_BASE": api.stripe_api_base,
        "STRIPE_SECRET_KEY": api.stripe_key,
        "ONSALE_LOAD_ADMIN_EMAIL": admin[0],
        "ONSALE_LOAD_ADMIN_PASSWORD": admin[1],
        "ONSALE_DATA_DIR": str(out),  # nothing there: every secret above is given
        "ONSALE_JWT_SECRET": api.jwt_secret,  # the signed-in buyers' tokens
    }
    args = [
        str(Path(sys.executable).with_name("locust")),
        "--config", "locust/scenarios/spike.conf", "--host", api.base_url,
        "-u", str(USERS), "-r", "50", "-t", "30s", "--stop-timeout", "10",
        "--signed-in", str(USERS), "--seated", f"{SEATS[0]}x{SEATS[1]}", "--ga", str(GA),
        # Correctness is what CI judges; latency figures come from `make load`.
        "--p95-ms", "10000", "--hold-p95-ms", "10000", "--checkout-p95-ms", "10000",
        "--settle-s", "30",
        "--html", str(out / "spike.html"), "--csv", str(out / "spike"),
        "--verdict-file", str(out / "verdict.json"),
    ]  # fmt: skip
    done = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=150)
    log = done.stdout + done.stderr
    assert done.returncode == 0, log[-6000:]
    return log


async def test_spike_of_200_buyers_sells_out_without_oversell(
    live_api: LiveApi, database_url: str, db: AsyncEngine, tmp_path: Path
) -> None:
    admin = (f"load-admin-{uuid.uuid4().hex[:8]}@example.com", "load-admin-password")
    await create_admin(db, *admin)

    await asyncio.to_thread(locust_spike, live_api, database_url, admin, tmp_path)

    verdict = json.loads((tmp_path / "verdict.json").read_text())
    figures, tally = verdict["figures"], verdict["tally"]
    print("\nspike figures:", json.dumps(figures), "\ntally:", json.dumps(tally))
    assert verdict["passed"], [c for c in verdict["checks"] if not c["ok"]]
    assert figures["users"] == USERS and figures["requests"] > 1000
    assert figures["holds_ok"] > 0 and figures["payments_succeeded"] > 0
    assert tally["seats_unavailable"] + tally["sold_out"] > 0  # the crowd met contention
    assert (tmp_path / "spike.html").stat().st_size > 0

    # Our own look at Postgres, beside the scenario's.
    event_id = verdict["event_id"]
    async with db.connect() as conn:
        twice = (await conn.execute(text(
            "SELECT count(*) FROM (SELECT seat_id FROM tickets WHERE event_id = :e AND"
            " seat_id IS NOT NULL AND status = 'valid' GROUP BY seat_id HAVING count(*) > 1) d"
        ), {"e": event_id})).scalar_one()  # fmt: skip
        per_section: dict[str, int] = dict((await conn.execute(text(
            "SELECT section_code, count(*) FROM tickets WHERE event_id = :e AND status = 'valid'"
            " GROUP BY section_code"
        ), {"e": event_id})).all())  # fmt: skip
        paid = (await conn.execute(text(
            "SELECT count(*) FROM orders WHERE event_id = :e AND status = 'paid'"
        ), {"e": event_id})).scalar_one()  # fmt: skip
    assert twice == 0
    assert per_section.get("A", 0) <= SEATS[0] * SEATS[1] and per_section.get("GA", 0) <= GA
    assert paid == tally["payments_succeeded"]


async def test_oversell_check_sees_an_oversell(database_url: str, db: AsyncEngine) -> None:
    """Negative control: GA tickets beyond capacity, written straight into
    Postgres, must fail the check the scenarios rely on."""
    event_id = f"oversell-{uuid.uuid4().hex[:8]}"
    async with db.begin() as conn:
        await conn.execute(text(
            "INSERT INTO events (id, name, venue, starts_at, currency, status, hold_ttl_s,"
            " max_tickets_per_customer) VALUES (:e, 'x', 'y', now(), 'EUR', 'on_sale', 600, 0)"
        ), {"e": event_id})  # fmt: skip
        await conn.execute(text(
            "INSERT INTO sections (id, event_id, code, name, kind, price_cents, capacity, sold)"
            " VALUES (gen_random_uuid(), :e, 'GA', 'Floor', 'general', 100, 2, 2)"
        ), {"e": event_id})  # fmt: skip
        await conn.execute(text(
            "INSERT INTO orders (id, event_id, customer_id, hold_id, status, items) VALUES"
            " (:o, :e, 'c', :h, 'paid', '[{\"section\": \"GA\", \"quantity\": 2}]')"
        ), {"o": f"or_{event_id}", "e": event_id, "h": f"hl_{event_id}"})  # fmt: skip
        await conn.execute(text(
            "INSERT INTO tickets (order_id, event_id, section_code)"
            " SELECT :o, :e, 'GA' FROM generate_series(1, 3)"
        ), {"o": f"or_{event_id}", "e": event_id})  # fmt: skip
    done = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, str(PGCHECK), "--database-url", database_url, "--event", event_id,
         "--settle-s", "0"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    found = json.loads(done.stdout)
    assert done.returncode == 1 and not found["ok"]
    assert found["oversold"] == 1 and found["over_capacity"] == ["GA"]
    assert found["orders_wrong_tickets"] and found["sold_counter_off"] == ["GA"]
