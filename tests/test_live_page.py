"""The live seat-map page in a real browser (Debian's Chromium, driven by
Playwright) against `onsale serve` on real Redis, Postgres and Ray: what other
buyers do through the API shows on an open page within a second, and a buyer
can log in, hold and release seats from the page itself."""

from __future__ import annotations

import os
import re
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.async_api import Browser, Locator, Page, async_playwright, expect
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.api_support import PASSWORD, User, on_sale_event, register, user_with_role
from tests.conftest import LiveApi
from tests.sales import wait_for
from tests.tools import need_tool

pytestmark = pytest.mark.browser

SECTIONS = [
    {"kind": "seated", "code": "A", "name": "Stalls", "price_cents": 4500, "rows": 5,
     "seats_per_row": 10},
    {"kind": "general", "code": "FLOOR", "name": "Floor", "price_cents": 3000, "capacity": 50},
]  # fmt: skip
LIVE_WITHIN_MS = 1000  # the promise: a change reaches an open page within a second
ARTIFACTS = Path(os.environ.get("ONSALE_TEST_ARTIFACTS", "test-artifacts"))


# ---------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
async def browser() -> AsyncIterator[Browser]:
    """Debian's Chromium (Playwright's own browser download cannot run here)."""
    executable = need_tool("chromium")
    async with async_playwright() as p:
        chromium = await p.chromium.launch(
            executable_path=executable,
            # No sandbox as root; nothing reaching for the (closed) network.
            args=["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update",
                  "--disable-sync"],
        )  # fmt: skip
        yield chromium
        await chromium.close()


@pytest.fixture
async def page(browser: Browser) -> AsyncIterator[Page]:
    """A fresh browser context (its own sessionStorage) that must see no script errors."""
    context = await browser.new_context(viewport={"width": 1280, "height": 900})
    tab = await context.new_page()
    errors: list[str] = []
    tab.on("pageerror", lambda exc: errors.append(str(exc)))
    yield tab
    await context.close()
    assert not errors, errors


@pytest.fixture
async def http(live_api: LiveApi) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=live_api.base_url, timeout=30) as client:
        yield client


@pytest.fixture
async def event(db: AsyncEngine, http: httpx.AsyncClient) -> dict[str, Any]:
    """On sale: A (seated, 5 rows of 10) and FLOOR (general, 50)."""
    organizer = await user_with_role(db, http, "organizer")
    return await on_sale_event(http, organizer, SECTIONS, name="Live Map Night")


# ---------------------------------------------------------------- helpers


async def hold(http: httpx.AsyncClient, who: User, event_id: str, **body: Any) -> dict[str, Any]:
    headers = {**who.auth, "Idempotency-Key": str(uuid.uuid4())}
    r = await http.post(f"/events/{event_id}/holds", json=body, headers=headers)
    assert r.status_code == 201, r.text
    return dict(r.json())


async def open_live(page: Page, live_api: LiveApi, event_id: str) -> None:
    await page.goto(f"{live_api.base_url}/events/{event_id}/live")
    await expect(page.locator("#conn")).to_have_attribute("data-state", "live", timeout=15_000)
    await expect(page.locator("[data-seat]")).to_have_count(50)


def seat(page: Page, seat_id: str) -> Locator:
    return page.locator(f'[data-seat="{seat_id}"]')


# ---------------------------------------------------------------- tests


async def test_holds_and_releases_made_through_the_api_show_on_an_open_page_within_a_second(
    page: Page, live_api: LiveApi, http: httpx.AsyncClient, event: dict[str, Any]
) -> None:
    await open_live(page, live_api, event["id"])
    floor = page.locator('[data-section="FLOOR"]')
    await expect(floor).to_have_attribute("data-available", "50")
    await expect(seat(page, "A-2-3")).to_have_attribute("data-status", "available")
    rival = await register(http, "rival")

    seated = await hold(http, rival, event["id"], seats=["A-2-3", "A-2-4"])
    posted = time.monotonic()
    for seat_id in ("A-2-3", "A-2-4"):
        await expect(seat(page, seat_id)).to_have_attribute(
            "data-status", "held", timeout=LIVE_WITHIN_MS
        )
    assert time.monotonic() - posted < LIVE_WITHIN_MS / 1000
    await expect(seat(page, "A-2-3").locator("title")).to_have_text("A-2-3: held")
    await expect(seat(page, "A-2-3")).not_to_have_class(re.compile(r"\bmine\b"))

    await hold(http, rival, event["id"], section="FLOOR", quantity=3)
    await expect(floor).to_have_attribute("data-held", "3", timeout=LIVE_WITHIN_MS)
    await expect(floor).to_have_attribute("data-available", "47")
    await expect(floor.locator('[data-count="held"]')).to_have_text("3")

    # Playwright makes the directory.
    await page.screenshot(path=str(ARTIFACTS / "live-seat-map.png"), full_page=True)

    r = await http.delete(f"/holds/{seated['hold_id']}", headers=rival.auth)
    assert r.status_code == 204, r.text
    for seat_id in ("A-2-3", "A-2-4"):
        await expect(seat(page, seat_id)).to_have_attribute(
            "data-status", "available", timeout=LIVE_WITHIN_MS
        )


async def test_a_buyer_logs_in_on_the_page_holds_two_seats_and_releases_them(
    page: Page, live_api: LiveApi, http: httpx.AsyncClient, event: dict[str, Any]
) -> None:
    buyer = await register(http, "pagebuyer")
    await open_live(page, live_api, event["id"])
    await page.fill("#login-email", buyer.email)
    await page.fill("#login-password", PASSWORD)
    await page.click("#login-button")
    await expect(page.locator("#who")).to_have_text(buyer.email)

    await seat(page, "A-1-1").click()
    await seat(page, "A-1-2").click()
    await expect(page.locator("#hold-seats")).to_have_text("Hold 2 seats")
    async with page.expect_request(
        lambda r: r.method == "POST" and r.url.endswith("/holds")
    ) as sent:
        await page.click("#hold-seats")
    request = await sent.value
    assert request.post_data_json == {"seats": ["A-1-1", "A-1-2"]}
    assert uuid.UUID(request.headers["idempotency-key"])
    assert request.headers["authorization"].startswith("Bearer ")

    for seat_id in ("A-1-1", "A-1-2"):
        await expect(seat(page, seat_id)).to_have_class(re.compile(r"\bmine\b"))
        await expect(seat(page, seat_id)).to_have_attribute("data-status", "held")
    countdown = page.locator("#countdown")
    await expect(countdown).to_have_text(re.compile(r"^\d\d:\d\d$"))
    minutes, seconds = map(int, (await countdown.inner_text()).split(":"))
    assert 0 < minutes * 60 + seconds <= event["hold_ttl_s"]
    await expect(page.locator("#amount")).to_contain_text("90")  # 2 x 45.00
    await page.screenshot(path=str(ARTIFACTS / "live-seat-map-hold.png"), full_page=True)

    hold_id = await page.evaluate("window.onsaleLive.hold.hold_id")
    token = await page.evaluate("sessionStorage.getItem('onsale.access')")
    r = await http.get(f"/holds/{hold_id}", headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 200, r.text
    assert sorted(r.json()["seats"]) == ["A-1-1", "A-1-2"]
    assert (await http.get(f"/holds/{hold_id}", headers=buyer.auth)).status_code == 200

    await page.click("#release")
    for seat_id in ("A-1-1", "A-1-2"):
        await expect(seat(page, seat_id)).to_have_attribute(
            "data-status", "available", timeout=LIVE_WITHIN_MS
        )
        await expect(seat(page, seat_id)).not_to_have_class(re.compile(r"\bmine\b"))
    await expect(page.locator("#hold")).to_be_hidden()
    r = await http.get(f"/holds/{hold_id}", headers=buyer.auth)
    assert r.status_code in (404, 410), r.text


async def test_the_page_reconnects_after_its_socket_drops_and_catches_up(
    page: Page, live_api: LiveApi, http: httpx.AsyncClient, event: dict[str, Any]
) -> None:
    await open_live(page, live_api, event["id"])
    rival = await register(http, "rival")
    await page.evaluate(
        """() => {
            window.firstSocket = window.onsaleLive.socket;
            window.connStates = [];
            const conn = document.getElementById('conn');
            new MutationObserver(() => window.connStates.push(conn.dataset.state))
                .observe(conn, {attributes: true, attributeFilter: ['data-state']});
            window.onsaleLive.socket.close();
        }"""
    )
    # Placed while the page is (most likely) between sockets: the snapshot of
    # the new connection must carry it.
    await hold(http, rival, event["id"], seats=["A-3-3"])

    # Polled with evaluate, not wait_for_function: that one evals its
    # predicate inside the page, which the page's CSP (no 'unsafe-eval') refuses.
    async def reconnected() -> bool:
        return bool(
            await page.evaluate(
                "() => window.onsaleLive.socket !== window.firstSocket"
                " && document.getElementById('conn').dataset.state === 'live'"
            )
        )

    await wait_for(reconnected, 15, "the page to reconnect")
    states = await page.evaluate("window.connStates")
    assert states[0] == "offline" and states[-1] == "live", states
    await expect(seat(page, "A-3-3")).to_have_attribute("data-status", "held")

    await hold(http, rival, event["id"], seats=["A-3-4"])
    await expect(seat(page, "A-3-4")).to_have_attribute(
        "data-status", "held", timeout=LIVE_WITHIN_MS
    )


async def test_the_waiting_room_page_shows_the_place_then_the_seat_map_holds_with_the_pass(
    page: Page, live_api: LiveApi, http: httpx.AsyncClient, db: AsyncEngine
) -> None:
    organizer = await user_with_role(db, http, "organizer")
    event = await on_sale_event(http, organizer, SECTIONS, name="Queue Night")
    url = f"/events/{event['id']}/queue"
    room = {
        "enabled": True,
        "opens_at": (datetime.now(UTC) + timedelta(hours=1)).isoformat(),
        "admit_per_minute": 120,
        "max_active": 100,
        "pass_ttl_s": 600,
        "pre_open_order": "fifo",
    }
    assert (await http.put(url, json=room, headers=organizer.auth)).status_code == 200
    for _ in range(3):  # three people joined before this buyer
        token = live_api.token(uuid.uuid4())
        r = await http.post(f"{url}/join", headers={"Authorization": f"Bearer {token}"})
        assert r.status_code == 200, r.text
    buyer = await register(http, "queuebuyer")

    await page.goto(f"{live_api.base_url}{url}")  # a browser asks for HTML: the page
    await page.fill("#login-email", buyer.email)
    await page.fill("#login-password", PASSWORD)
    await page.click("#login-button")
    await expect(page.locator("#ahead")).to_have_text("3", timeout=10_000)
    await expect(page.locator("#conn")).to_have_attribute("data-state", "live", timeout=10_000)
    await page.screenshot(path=str(ARTIFACTS / "waiting-room.png"), full_page=True)

    room["opens_at"] = datetime.now(UTC).isoformat()  # two a second from now on
    await http.put(url, json=room, headers=organizer.auth)
    await expect(page).to_have_url(re.compile(r"/live$"), timeout=20_000)  # its turn came
    key = f"onsale.queue-pass.{event['id']}"
    pass_ = await page.evaluate(f"sessionStorage.getItem('{key}')")
    assert pass_
    await expect(page.locator("[data-seat]")).to_have_count(50)
    await seat(page, "A-2-2").click()
    async with page.expect_request(
        lambda r: r.method == "POST" and r.url.endswith("/holds")
    ) as sent:
        await page.click("#hold-seats")
    assert (await sent.value).headers["onsale-queue-pass"] == pass_
    await expect(seat(page, "A-2-2")).to_have_class(re.compile(r"\bmine\b"))
