"""Before the doors open: the run's own event, published, and the customers'
accounts; after: the gate the last-seat crowd waits at."""

from __future__ import annotations

import logging
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import gevent
import gevent.event
import gevent.pool
import jwt
import requests
from locust.contrib.fasthttp import FastHttpSession
from locust.env import Environment

from onsale_load.options import SetupError, Target
from onsale_load.tally import TALLY

log = logging.getLogger("onsale.load")

PASSWORD = "load-test-password"  # every simulated customer's: they are throwaway accounts
SEATED, GENERAL = "A", "GA"
PRE_SALE_REGISTER = "pre-sale: /auth/register"
SETUP_ADDRESS = "10.255.255.254"  # the organizer's own X-Forwarded-For (see crowd.address)


@dataclass(frozen=True)
class Account:
    email: str
    access_token: str


@dataclass
class Run:
    """What the test-start hook prepared; every simulated user reads it."""

    scenario: str
    target: Target
    event_id: str
    rows: int
    seats_per_row: int
    ga_capacity: int
    accounts: list[Account]
    # Opens when every user of the run has been started (the last-seat race).
    gate: gevent.event.Event = field(default_factory=gevent.event.Event)


RUN: Run | None = None
SETUP_ERROR = ""


def open_doors(environment: Environment) -> None:
    """``test_start``: the event, published, and the account pool. A failure
    stops the run with exit code 2 and says why."""
    global RUN, SETUP_ERROR
    options: Any = environment.parsed_options
    TALLY.reset()
    RUN, SETUP_ERROR = None, ""
    try:
        target = Target.resolve(options)
        rows, per_row = _layout(options.seated)
        token = admin_token(environment.host or "", target)
        event_id = create_event(
            environment.host or "", token, options.scenario, rows, per_row, options.ga
        )
        accounts = (
            signed_in_accounts(target, options.signed_in)
            if options.signed_in
            else register_accounts(environment, options.accounts)
        )
    except (SetupError, requests.RequestException) as exc:
        SETUP_ERROR = str(exc)
        log.error("the run cannot start: %s", exc)
        environment.process_exit_code = 2
        if environment.runner is not None:
            gevent.spawn(environment.runner.quit)
        return
    RUN = Run(options.scenario, target, event_id, rows, per_row, options.ga, accounts)
    log.info(
        "event %s on sale (%d seats, %d GA); %s",
        event_id,
        rows * per_row,
        options.ga,
        f"{len(accounts)} accounts shared" if accounts else "each user registers on arrival",
    )


def everyone_in(user_count: int) -> None:
    """``spawning_complete``: the crowd is all there."""
    TALLY.counts["peak_users"] = max(TALLY["peak_users"], user_count)
    if RUN is not None:
        RUN.gate.set()


def _layout(seated: str) -> tuple[int, int]:
    try:
        rows, per_row = (int(x) for x in seated.lower().split("x"))
    except ValueError as exc:
        raise SetupError(f"--seated wants ROWSxSEATS_PER_ROW, not {seated!r}") from exc
    return rows, per_row


def admin_token(host: str, target: Target) -> str:
    answer = requests.post(
        f"{host}/auth/login",
        json={"email": target.admin_email, "password": target.admin_password},
        headers={"X-Forwarded-For": SETUP_ADDRESS},
        timeout=30,
    )
    if answer.status_code != 200:
        raise SetupError(f"admin login as {target.admin_email}: {_problem(answer)}")
    return str(answer.json()["access_token"])


def create_event(host: str, token: str, scenario: str, rows: int, per_row: int, ga: int) -> str:
    """A draft event with the run's sections, then published."""
    auth = {"Authorization": f"Bearer {token}", "X-Forwarded-For": SETUP_ADDRESS}

    def post(path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        answer = requests.post(f"{host}{path}", json=body, headers=auth, timeout=60)
        if answer.status_code not in (200, 201):
            raise SetupError(f"POST {path}: {_problem(answer)}")
        return dict(answer.json())

    starts_at = (datetime.now(UTC) + timedelta(days=30)).replace(microsecond=0)
    event = post("/events", {
        "name": f"load {scenario} {starts_at:%H%M%S}-{uuid.uuid4().hex[:6]}",
        "venue": "Load Hall", "starts_at": starts_at.isoformat(), "currency": "EUR",
        "hold_ttl_s": 600, "max_tickets_per_customer": 0, "max_held_per_customer": 0,
    })  # fmt: skip
    if rows and per_row:
        post(f"/events/{event['id']}/sections", {
            "kind": "seated", "code": SEATED, "name": "Stalls", "price_cents": 5000,
            "rows": rows, "seats_per_row": per_row,
        })  # fmt: skip
    if ga:
        post(f"/events/{event['id']}/sections", {
            "kind": "general", "code": GENERAL, "name": "Floor", "price_cents": 3000,
            "capacity": ga,
        })  # fmt: skip
    post(f"/events/{event['id']}/publish")
    return str(event["id"])


def register(
    session: FastHttpSession, address: str, name: str = "/auth/register"
) -> Account | None:
    """POST /auth/register, as a customer does; recorded in Locust's stats."""
    email = f"load-{uuid.uuid4().hex[:12]}@example.com"
    with session.post(
        "/auth/register",
        name=name,
        json={"email": email, "password": PASSWORD, "name": "Load Tester"},
        headers={"X-Forwarded-For": address},
        catch_response=True,
    ) as answer:
        if answer.status_code != 201:
            answer.failure(f"{answer.status_code} {(answer.text or '')[:200]}")
            return None
        return Account(email, answer.json()["access_token"])


def register_accounts(environment: Environment, n: int, concurrency: int = 8) -> list[Account]:
    """The pool shared by the crowd, registered before the doors open (and
    reported apart, so the run's figures are the crowd's)."""
    if n <= 0:
        return []
    session = FastHttpSession(environment.host, environment.events.request, user=None)
    pool = gevent.pool.Pool(concurrency)
    made = pool.map(
        lambda i: register(session, f"10.254.{i // 250}.{i % 250 + 1}", PRE_SALE_REGISTER),
        range(n),
    )
    accounts = [a for a in made if a is not None]
    if len(accounts) < n:
        raise SetupError(f"registered {len(accounts)} of {n} accounts (see the failures)")
    return accounts


def signed_in_accounts(target: Target, n: int) -> list[Account]:
    """N buyers who made their accounts and logged in before the sale, as in
    life: access tokens signed with the server's own key (its data dir's
    jwt-secret, or ONSALE_JWT_SECRET), so that the sale's figures carry no
    argon2 hash (registration and login are the ramp scenario's to measure)."""
    if not target.jwt_secret:
        raise SetupError("--signed-in needs the server's JWT secret (ONSALE_JWT_SECRET or "
                         "<data-dir>/jwt-secret)")  # fmt: skip
    now = int(time.time())
    return [
        Account(
            f"signed-in-{i}@example.com",
            jwt.encode(
                {
                    "sub": str(uuid.uuid4()),
                    "role": "customer",
                    "iat": now,
                    "exp": now + 3600,
                    "iss": "onsale",
                    "jti": uuid.uuid4().hex[:16],
                },
                target.jwt_secret,
                algorithm="HS256",
            ),
        )
        for i in range(n)
    ]


def _problem(answer: requests.Response) -> str:
    try:
        body = answer.json()
        return f"{answer.status_code} {body.get('code')}: {body.get('detail') or body}"
    except ValueError:
        return f"{answer.status_code} {answer.text[:200]}"
