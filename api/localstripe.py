"""localstripe on loopback: the embedded default's Stripe, for offline test mode.

localstripe is a real HTTP server speaking Stripe's API (PaymentIntents,
payment methods, refunds) that sends signed webhooks. It is started here
rather than with its own command line, which listens on every interface and
pickles its whole store to /tmp after each request: bound to 127.0.0.1, kept in
memory, one per data directory.
"""

from __future__ import annotations

import argparse
import secrets
import signal
import subprocess
import sys
from pathlib import Path

import httpx

from persistence.embedded import _Child, _die_with_parent, _port_open, _stop_stale, _wait_until

WEBHOOK_EVENTS = [
    "payment_intent.succeeded",
    "payment_intent.payment_failed",
    "payment_intent.canceled",
    "charge.refunded",
]


class EmbeddedStripe(_Child):
    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 30) -> str:
        from persistence.embedded import free_port

        self.data_dir.mkdir(parents=True, exist_ok=True)
        pidfile = self.data_dir / "localstripe.pid"
        _stop_stale(pidfile, "api.localstripe", signal.SIGTERM)
        self.port = self._requested_port or free_port()
        log = self.data_dir / "localstripe.log"
        with log.open("ab") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "api.localstripe", "--port", str(self.port)],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                preexec_fn=_die_with_parent,
            )
        pidfile.write_text(str(self.process.pid))
        _wait_until(lambda: self._alive(), timeout_s, "localstripe", log)
        return self.url

    def _alive(self) -> bool:
        if self.process is not None and self.process.poll() is not None:
            raise RuntimeError(f"localstripe exited with {self.process.returncode}")
        return _port_open(self.port)

    def register_webhook(self, url: str, secret: str) -> None:
        """Where localstripe sends events, signed with ``secret``."""
        response = httpx.post(
            f"{self.url}/_config/webhooks/onsale",
            json={"url": url, "secret": secret, "events": WEBHOOK_EVENTS},
            timeout=10,
        )
        response.raise_for_status()

    def stop(self) -> None:
        self._terminate(signal.SIGTERM)


def webhook_secret(data_dir: Path) -> str:
    """The embedded default's signing secret, generated once into the data dir."""
    from api.security import load_or_create_secret

    return "whsec_" + load_or_create_secret(data_dir, "stripe-webhook-secret")


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m api.localstripe")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    from aiohttp import web
    from localstripe import resources, server

    resources.store.dump_to_disk = lambda: None
    web.run_app(server.app, host="127.0.0.1", port=args.port, access_log=None, print=None)


def test_key() -> str:
    """A test-mode key localstripe accepts (any sk_… does)."""
    return "sk_test_onsale_" + secrets.token_hex(8)


if __name__ == "__main__":
    main()
