"""Outcomes Locust's request statistics do not hold: who got a hold, who was
turned away and why, who paid. One Locust process, so module state is the
whole run's (a distributed run would need these sent to the master)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field


@dataclass
class Tally:
    counts: Counter[str] = field(default_factory=Counter)
    # Orders whose PaymentIntent Stripe answered ``succeeded``.
    paid_orders: list[str] = field(default_factory=list)
    # Rate-limit probe: successes each prober had before its first 429.
    accepted_before_429: dict[str, list[int]] = field(
        default_factory=lambda: {"holds": [], "global": []}
    )

    def add(self, what: str, n: int = 1) -> None:
        self.counts[what] += n

    def __getitem__(self, what: str) -> int:
        return self.counts[what]

    def reset(self) -> None:
        self.counts.clear()
        self.paid_orders.clear()
        for values in self.accepted_before_429.values():
            values.clear()


TALLY = Tally()
