"""Stripe, through the official library: PaymentIntents, refunds, webhooks.

The library is synchronous; calls run in a worker thread so an API worker's
event loop never waits on Stripe. ``ONSALE_STRIPE_API_BASE`` points it at
localstripe in the embedded default and in tests.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import stripe


class PaymentsUnavailable(Exception):
    """Stripe could not be reached or refused for a reason of its own."""


class InvalidSignature(Exception):
    pass


@dataclass(frozen=True)
class Intent:
    id: str
    client_secret: str | None
    status: str
    amount_received: int | None = None  # what Stripe took, in the currency's minor unit
    currency: str | None = None


def received(intent: Any) -> tuple[int | None, str | None]:
    """(amount received, currency) of a PaymentIntent, as a dict or an object.
    localstripe reports no ``amount_received``: a succeeded intent took its
    ``amount`` in full there."""
    get = intent.get if isinstance(intent, dict) else lambda k: getattr(intent, k, None)
    amount = get("amount_received")
    if amount is None and get("status") == "succeeded":
        amount = get("amount")
    currency = get("currency")
    return (int(amount) if amount is not None else None), (str(currency) if currency else None)


class Payments:
    provider = "stripe"

    def __init__(
        self,
        secret_key: str,
        webhook_secret: str,
        api_base: str | None = None,
        *,
        max_concurrent: int = 32,
        timeout_s: float = 10.0,
    ) -> None:
        """At most ``max_concurrent`` calls to Stripe at once from this
        process, each given ``timeout_s``: a caller that would wait longer for
        a turn, or a call that takes longer, is PaymentsUnavailable (the API
        answers 503 with Retry-After) rather than queueing without end."""
        self._client = stripe.StripeClient(
            secret_key,
            base_addresses={"api": api_base} if api_base else {},
            max_network_retries=2,
            # The library's own socket timeout (80 s by default) is what frees
            # the thread of a call the caller gave up on at timeout_s: a
            # hanging Stripe must not keep every turn's thread for minutes.
            http_client=stripe.new_default_http_client(timeout=timeout_s),
        )
        self._webhook_secret = webhook_secret
        self._turns = asyncio.Semaphore(max_concurrent)
        # Threads of their own, one per turn: the library blocks, and the
        # loop's default pool (CPU count + 4 threads) would queue the turns
        # behind each other and behind argon2 hashes.
        self._threads = ThreadPoolExecutor(max_concurrent, thread_name_prefix="stripe")
        self._timeout_s = timeout_s

    async def create_intent(
        self, *, order_id: str, event_id: str, amount_cents: int, currency: str
    ) -> Intent:
        """One PaymentIntent per order: the idempotency key is the order id, so
        a retried checkout never creates a second one."""
        intent = await self._call(
            self._client.v1.payment_intents.create,
            params={
                "amount": amount_cents,
                "currency": currency.lower(),
                "payment_method_types": ["card"],
                "metadata": {"order_id": order_id, "event_id": event_id},
            },
            options={"idempotency_key": f"onsale-order-{order_id}"},
        )
        return Intent(intent.id, intent.client_secret, intent.status)

    async def refund(self, payment_intent_id: str, *, reason_key: str) -> str:
        """Refunds the whole payment once per ``reason_key``; returns Stripe's status."""
        refund = await self._call(
            self._client.v1.refunds.create,
            params={"payment_intent": payment_intent_id},
            options={"idempotency_key": f"onsale-refund-{payment_intent_id}-{reason_key}"},
        )
        return str(refund.status)

    def verify(self, payload: bytes, signature: str | None) -> dict[str, Any]:
        """The event, if ``Stripe-Signature`` is Stripe's (or localstripe's) for
        this payload and recent; raises InvalidSignature otherwise."""
        try:
            event = stripe.Webhook.construct_event(payload, signature or "", self._webhook_secret)
        except (stripe.SignatureVerificationError, ValueError) as exc:
            raise InvalidSignature(str(exc)) from exc
        return dict(event.to_dict())

    async def retrieve(self, payment_intent_id: str) -> Intent:
        """The PaymentIntent as Stripe has it now (reconciliation)."""
        intent = await self._call(self._client.v1.payment_intents.retrieve, payment_intent_id)
        return Intent(intent.id, None, str(intent.status), *received(intent))

    async def cancel(self, payment_intent_id: str) -> Intent:
        """Cancels a PaymentIntent that was never paid, so it can no longer
        be; a payment that got there first is returned as it stands."""
        try:
            intent = await self._call(self._client.v1.payment_intents.cancel, payment_intent_id)
        except PaymentsUnavailable:
            return await self.retrieve(payment_intent_id)  # e.g. it succeeded meanwhile
        return Intent(intent.id, None, str(intent.status))

    async def _call(self, method: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            async with asyncio.timeout(self._timeout_s):
                async with self._turns:
                    context = contextvars.copy_context()  # the request id, in the library's logs
                    call = functools.partial(context.run, method, *args, **kwargs)
                    return await asyncio.get_running_loop().run_in_executor(self._threads, call)
        except TimeoutError as exc:
            raise PaymentsUnavailable("Stripe did not answer in time") from exc
        except stripe.StripeError as exc:
            raise PaymentsUnavailable(str(exc)) from exc
