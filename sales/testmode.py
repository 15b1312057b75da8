"""Stripe in test mode, offline: localstripe on loopback, and paying with a test card.

The embedded default (`onsale up`) and the test suite run payments against
localstripe, a real HTTP server speaking Stripe's API (PaymentIntents, payment
methods, refunds) that sends signed webhooks. It is started here rather than
with its own command line, which listens on every interface and pickles its
whole store to /tmp after each request: bound to 127.0.0.1, kept in memory,
one per data directory. :func:`pay_with_card` is what a buyer's client does
with a PaymentIntent; `onsale simulate`, the load tests and the test suite pay
with it. Never used with a live key.
"""

from __future__ import annotations

import argparse
import secrets
import signal
import subprocess
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

import httpx
import stripe

from persistence.embedded import (
    ChildServer,
    die_with_parent,
    free_port,
    port_open,
    stop_stale,
    wait_until,
)
from persistence.secrets import load_or_create_secret

WEBHOOK_EVENTS = [
    "payment_intent.succeeded",
    "payment_intent.processing",
    "payment_intent.requires_action",
    "payment_intent.payment_failed",
    "payment_intent.canceled",
    "charge.refunded",
]
GOOD_CARD = "4242424242424242"  # Stripe's test card that pays
DECLINED_CARD = "4000000000000341"  # attaches, then the charge is declined


class EmbeddedStripe(ChildServer):
    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 30) -> str:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        pidfile = self.data_dir / "localstripe.pid"
        stop_stale(pidfile, "sales.testmode", signal.SIGTERM)
        self.port = self._requested_port or free_port()
        log = self.data_dir / "localstripe.log"
        with log.open("ab") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "sales.testmode", "--port", str(self.port)],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                preexec_fn=die_with_parent,
            )
        pidfile.write_text(str(self.process.pid))
        wait_until(lambda: self._alive(), timeout_s, "localstripe", log)
        return self.url

    def _alive(self) -> bool:
        if self.process is not None and self.process.poll() is not None:
            raise RuntimeError(f"localstripe exited with {self.process.returncode}")
        return port_open(self.port)

    def register_webhook(self, url: str, secret: str) -> None:
        """Where localstripe sends events, signed with ``secret``."""
        response = httpx.post(
            f"{self.url}/_config/webhooks/onsale",
            json={"url": url, "secret": secret, "events": WEBHOOK_EVENTS},
            timeout=10,
        )
        response.raise_for_status()

    def stop(self) -> None:
        self.terminate(signal.SIGTERM)


def webhook_secret(data_dir: Path) -> str:
    """The embedded default's signing secret, generated once into the data dir."""
    return "whsec_" + load_or_create_secret(data_dir, "stripe-webhook-secret")


def sandbox_key() -> str:
    """A test-mode key localstripe accepts (any sk_… does)."""
    return "sk_test_onsale_" + secrets.token_hex(8)


def stripe_client(api_key: str, api_base: str | None) -> stripe.StripeClient:
    return stripe.StripeClient(api_key, base_addresses={"api": api_base} if api_base else {})


def pay_with_card(client: stripe.StripeClient, intent_id: str, card: str = GOOD_CARD) -> str:
    """What a buyer's client does with a PaymentIntent: attach a card, confirm.
    Returns the intent's status, or "declined"."""
    method = client.v1.payment_methods.create(
        params={
            "type": "card",
            "card": {"number": card, "exp_month": 12, "exp_year": 2034, "cvc": "123"},
        }
    )
    client.v1.payment_intents.update(intent_id, params={"payment_method": method.id})
    try:
        return str(client.v1.payment_intents.confirm(intent_id).status)
    except stripe.CardError:
        return "declined"


def _refunds_by_charge(resources: Any) -> None:
    """localstripe finds a charge's refunds by scanning its whole store, and
    does so three times for every charge it writes out (each PaymentIntent
    answer, each webhook): its answers slow down with everything it ever
    stored, so that four spikes in a row took its median answer from 24 to
    440 ms and measured localstripe rather than onsale. Refunds are indexed
    by charge as they are made; the answers are the same."""
    by_charge: dict[str, list[Any]] = defaultdict(list)
    refund_init = resources.Refund.__init__

    def init(self: Any, *args: Any, **kwargs: Any) -> None:
        refund_init(self, *args, **kwargs)
        by_charge[self.charge].append(self)

    def refunds(charge: Any) -> Any:
        listed = resources.List(f"/v1/charges/{charge.id}/refunds")
        listed._list = sorted(by_charge.get(charge.id, ()), key=lambda r: r.date, reverse=True)
        return listed

    resources.Refund.__init__ = init
    resources.Charge.refunds = property(refunds)


def main() -> None:
    """``python -m sales.testmode --port N``: localstripe on loopback, in memory."""
    parser = argparse.ArgumentParser(prog="python -m sales.testmode")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    from aiohttp import web
    from localstripe import resources, server

    resources.store.dump_to_disk = lambda: None
    _refunds_by_charge(resources)
    web.run_app(server.app, host="127.0.0.1", port=args.port, access_log=None, print=None)


if __name__ == "__main__":
    main()
