"""`onsale simulate` against `onsale serve`: 120 buyers race for 30 seats and
40 standing places, pay through localstripe, and the oversell checks (the
buyers' own view, the API's counts, Postgres's tickets) all hold."""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.api_support import on_sale_event, user_with_role
from tests.conftest import LiveApi

pytestmark = pytest.mark.slow

SECTIONS = [
    {"kind": "seated", "code": "A", "name": "Stalls", "price_cents": 5000, "rows": 3,
     "seats_per_row": 10},
    {"kind": "general", "code": "FLOOR", "name": "Floor", "price_cents": 3000, "capacity": 40},
]  # fmt: skip


async def test_simulated_crowd_buys_at_most_what_there_is_and_pays(
    live_api: LiveApi, db: AsyncEngine, database_url: str
) -> None:
    async with httpx.AsyncClient(base_url=live_api.base_url, timeout=30) as http:
        organizer = await user_with_role(db, http, "organizer")
        event = await on_sale_event(http, organizer, SECTIONS, name="Simulated night")
    done = await asyncio.to_thread(
        subprocess.run,
        [str(Path(sys.executable).with_name("onsale")), "simulate", "--event", event["id"],
         "--users", "120", "--base-url", live_api.base_url, "--pay",
         "--stripe-key", live_api.stripe_key, "--stripe-api-base", live_api.stripe_api_base,
         "--database-url", database_url],
        capture_output=True, text=True, timeout=240,
    )  # fmt: skip
    out = done.stdout
    print(out)
    assert done.returncode == 0, out[-3000:] + done.stderr[-3000:]
    for check in ("no seat won twice", "no GA section over capacity", "no section over capacity",
                  "no seat with two valid tickets"):  # fmt: skip
        assert re.search(rf"{check}.*: ok", out), out
    won = int(re.search(r"holds won\s*│\s*([\d,]+)", out)[1].replace(",", ""))  # type: ignore[index]
    paid = int(re.search(r"orders paid\s*│\s*([\d,]+)", out)[1].replace(",", ""))  # type: ignore[index]
    # 30 seats and 40 places, one or two a hold: the crowd sells out and no more.
    assert 35 <= won <= 70 and paid == won, out
