"""What every simulated person can do: call the API and judge the answer,
hold, order, pay through Stripe, wait for the order to be paid.

A person has an address of their own (sent as ``X-Forwarded-For``, which the
API's uvicorn trusts from loopback, so per-address limits apply per person as
they would behind a proxy), an account (their own, registered on arrival, or
one of a shared pool) and a pace. 409 ``seats_unavailable``/``sold_out`` and
403 ``customer_limit`` are answers a crowd must get, not failures.
"""

from __future__ import annotations

import itertools
import random
import time
import uuid
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import gevent
from locust import FastHttpUser

from onsale_load import organizer
from onsale_load.organizer import Run
from onsale_load.tally import TALLY

TURNED_AWAY = frozenset({"seats_unavailable", "sold_out", "customer_limit"})
BUSY = frozenset({503})  # engine_timeout / engine_unavailable: retried once, same key
PAID_TIMEOUT_S = 30.0
_numbers = itertools.count(1)


@dataclass(frozen=True)
class Pace:
    """Think times, in seconds (uniform between the two bounds)."""

    step_s: tuple[float, float]  # between the steps of one journey
    between_s: tuple[float, float]  # between journeys
    watch_s: tuple[float, float]  # between availability polls once sold out


PACES = {
    "ramp": Pace((0.2, 1.0), (1.0, 3.0), (2.0, 5.0)),
    "spike": Pace((0.1, 0.5), (0.5, 2.0), (1.0, 3.0)),
    "soak": Pace((0.5, 2.0), (3.0, 8.0), (3.0, 8.0)),
    "last-seat": Pace((0.1, 0.3), (1.0, 3.0), (1.0, 3.0)),
    "rate-limit": Pace((0.02, 0.05), (0.02, 0.05), (0.02, 0.05)),
}


def address(n: int) -> str:
    return f"10.{(n >> 16) & 255}.{(n >> 8) & 255}.{n & 255}"


@dataclass(frozen=True)
class Answer:
    status: int
    body: Any
    retry_after: str | None

    @property
    def code(self) -> str | None:
        return self.body.get("code") if isinstance(self.body, dict) else None

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300


class Person:
    """One simulated person; ``act`` is one turn of their loop."""

    def __init__(self, user: FastHttpUser, run: Run) -> None:
        self.user = user
        self.client: Any = user.client
        self.run = run
        self.options = user.environment.parsed_options
        self.pace = PACES[run.scenario]
        self.n = next(_numbers)
        self.address = address(self.n)
        self.token: str | None = None
        self.rng = random.Random()
        TALLY.add("users_started")

    def act(self) -> None:
        raise NotImplementedError

    # ------------------------------------------------------------ helpers

    def signed_in(self) -> bool:
        if self.token is None:
            if self.run.accounts:
                self.token = self.run.accounts[self.n % len(self.run.accounts)].access_token
            else:
                account = organizer.register(self.client, self.address)
                if account is None:
                    self.pause((1.0, 3.0))
                    return False
                self.token = account.access_token
        return True

    def pause(self, bounds: tuple[float, float]) -> None:
        gevent.sleep(self.rng.uniform(*bounds))

    def call(
        self,
        method: str,
        path: str,
        *,
        name: str,
        json: Any = None,
        expected: frozenset[str] = frozenset(),
        key: str | None = None,
    ) -> Answer:
        """One API request, judged: 2xx and the ``expected`` problem codes pass."""
        headers = {"X-Forwarded-For": self.address}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        if key:
            headers["Idempotency-Key"] = key
        with self.client.request(
            method, path, name=name, json=json, headers=headers, catch_response=True
        ) as response:
            answer = _answer(response)
            if answer.status == 0:
                response.failure(f"no answer: {response.error}")
            elif answer.status == 429:
                _judge_429(response, answer, "rate_limited" in expected)
            elif answer.ok or answer.code in expected:
                response.success()
            else:
                response.failure(f"{answer.status} {answer.code or (response.text or '')[:120]}")
        if answer.code in TURNED_AWAY:
            TALLY.add(answer.code or "")
        if answer.status >= 500:
            TALLY.add("answers_5xx")
        return answer

    def hold(self, body: dict[str, Any]) -> Answer:
        """POST a hold; an engine that answers 503 gets one retry with the
        same Idempotency-Key after its Retry-After (a retry never holds twice)."""
        if self.options.baseline_holds:
            path = name = "/bench/pg-holds"
        else:
            path, name = f"/events/{self.run.event_id}/holds", "/events/{id}/holds"
        key = None if self.options.without_idempotency_key else uuid.uuid4().hex
        answer = self.call("POST", path, name=name, json=body, expected=TURNED_AWAY, key=key)
        if answer.status in BUSY:
            gevent.sleep(min(float(answer.retry_after or 1), 5.0))
            answer = self.call("POST", path, name=name, json=body, expected=TURNED_AWAY, key=key)
        if answer.ok:
            TALLY.add("holds_ok")
        return answer

    def availability(self) -> list[dict[str, Any]] | None:
        answer = self.call(
            "GET",
            f"/events/{self.run.event_id}/availability",
            name="/events/{id}/availability",
        )
        return list(answer.body["sections"]) if answer.ok else None

    def checkout(self, hold: dict[str, Any]) -> None:
        """Order the hold and pay for it through Stripe, then wait until the
        order reads ``paid`` (webhook, engine, write-behind to Postgres)."""
        order = self.call(
            "POST",
            "/orders",
            name="/orders",
            json={"hold_id": hold["hold_id"]},
            key=uuid.uuid4().hex,
            expected=frozenset({"hold_expired"}),
        )
        if not order.ok:
            return
        TALLY.add("orders_created")
        payment = order.body.get("payment")
        if not payment:
            TALLY.add("orders_without_payment")
            return
        self.pause(self.pace.step_s)
        if self.pay(payment["payment_intent_id"]):
            TALLY.paid_orders.append(order.body["order_id"])
            self.await_paid(order.body["order_id"])

    def pay(self, intent_id: str) -> bool:
        """What a buyer's browser does with Stripe: a card, attached, confirmed."""
        card = self.options.card
        method = card
        if not card.startswith("pm_"):
            made = self.stripe("/v1/payment_methods", "create payment method", {
                "type": "card", "card[number]": card, "card[exp_month]": 12,
                "card[exp_year]": 2034, "card[cvc]": "123",
            })  # fmt: skip
            if made is None:
                return False
            method = made["id"]
        if self.stripe(f"/v1/payment_intents/{intent_id}", "attach payment method",
                       {"payment_method": method}) is None:  # fmt: skip
            return False
        TALLY.add("payments_confirm_sent")
        confirmed = self.stripe(f"/v1/payment_intents/{intent_id}/confirm", "confirm", {})
        if confirmed is None or confirmed.get("status") != "succeeded":
            TALLY.add("payments_not_succeeded")
            return False
        TALLY.add("payments_succeeded")
        return True

    def stripe(self, path: str, what: str, form: dict[str, Any]) -> dict[str, Any] | None:
        target = self.run.target
        with self.client.request(
            "POST",
            target.stripe_api_base + path,
            name=f"stripe: {what}",
            data=urlencode(form),
            headers={
                "Authorization": f"Bearer {target.stripe_key}",
                "Content-Type": "application/x-www-form-urlencoded",
            },
            catch_response=True,
        ) as response:
            if response.status_code == 200:
                response.success()
                return dict(response.json())
            response.failure(f"{response.status_code} {(response.text or '')[:160]}")
            return None

    def await_paid(self, order_id: str) -> None:
        """Polls the order; the time from confirm to ``paid`` is reported as
        the pseudo-request ``FLOW confirm → order paid``."""
        began = time.perf_counter()
        while time.perf_counter() - began < PAID_TIMEOUT_S:
            gevent.sleep(0.5)
            answer = self.call("GET", f"/orders/{order_id}", name="/orders/{id}")
            if answer.ok and answer.body.get("status") == "paid":
                TALLY.add("orders_paid_seen")
                self._flow("confirm → order paid", began, None)
                return
        TALLY.add("orders_not_paid_in_time")
        self._flow("confirm → order paid", began, TimeoutError(f"{order_id} not paid"))

    def _flow(self, name: str, began: float, error: Exception | None) -> None:
        self.user.environment.events.request.fire(
            request_type="FLOW",
            name=name,
            response_time=(time.perf_counter() - began) * 1000,
            response_length=0,
            exception=error,
            context={},
        )


def _answer(response: Any) -> Answer:
    body: Any = None
    if response.status_code and response.text:
        try:
            body = response.json()
        except ValueError:
            body = None
    headers = response.headers or {}
    return Answer(response.status_code or 0, body, headers.get("retry-after"))


def _judge_429(response: Any, answer: Answer, expected: bool) -> None:
    """A 429 must say ``rate_limited``, with an integer Retry-After that the
    body's ``retry_after_s`` repeats; outside the rate-limit probe it means
    the server runs with rate limits on."""
    body = answer.body if isinstance(answer.body, dict) else {}
    seconds = answer.retry_after or ""
    well_formed = (
        answer.code == "rate_limited"
        and seconds.isdigit()
        and int(seconds) >= 1
        and body.get("retry_after_s") == int(seconds)
    )
    if not well_formed:
        TALLY.add("malformed_429")
        response.failure(f"malformed 429: Retry-After={seconds!r} body={str(body)[:160]}")
    elif expected:
        response.success()
    else:
        TALLY.add("unexpected_429")
        response.failure("429 rate_limited: run the server with ONSALE_RATE_LIMITS=off for load")
