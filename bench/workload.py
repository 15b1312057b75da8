"""What ``onsale bench engine`` asks of every mode, and what it measures.

The event (50,000 GA tickets and a 100x100 seated section), the seeded stream
of hold requests every mode and every repeat is given, the closed- or
open-loop driver that times each answer, and the tally of a run turned into a
:class:`RunResult`. The oversell checks here compare the successes a mode
reported with the final inventory in Redis (the engine and raw modes);
the Postgres baseline's own check is in :mod:`bench.pg_baseline`, and shares
:func:`seat_disagreements`.

Nothing here talks to a server: the modes (:mod:`bench.engine_modes`) pass
:func:`drive` a coroutine that makes one hold their way.
"""

from __future__ import annotations

import asyncio
import gc
import random
import statistics
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from engine.model import (
    Command,
    GeneralSection,
    HoldQuantity,
    HoldSeats,
    SeatedSection,
    Section,
    Snapshot,
    seat_id,
)

GA_CODE, SEATED_CODE = "GA", "S"
GA_CAPACITY, ROWS, SEATS_PER_ROW = 50_000, 100, 100
SECTIONS: list[Section] = [
    GeneralSection(GA_CODE, GA_CAPACITY),
    SeatedSection(SEATED_CODE, rows=ROWS, seats_per_row=SEATS_PER_ROW),
]
TTL_S = 600.0
MODES = ("engine", "raw", "baseline")  # also the order they run and are reported in


# ---------------------------------------------------------------- the request stream


class Request(NamedTuple):
    hold_id: str
    customer_id: str
    quantity: int
    seats: tuple[str, ...]  # empty: a GA request for `quantity` tickets

    def command(self) -> Command:
        ttl_ms = round(TTL_S * 1000)
        if self.seats:
            return HoldSeats(self.hold_id, self.customer_id, self.seats, ttl_ms)
        return HoldQuantity(self.hold_id, self.customer_id, GA_CODE, self.quantity, ttl_ms)


def build_stream(n: int, seed: int) -> list[Request]:
    """80 % GA holds of 1-4 tickets, 20 % runs of 1-4 adjacent seats at random.

    Ids come from the seeded generator (as uuid4 hex), so every mode and every
    repeat sees exactly the same stream.
    """
    rng = random.Random(seed)

    def token() -> str:
        return uuid.UUID(int=rng.getrandbits(128), version=4).hex

    stream = []
    for _ in range(n):
        quantity = rng.randint(1, 4)
        seats: tuple[str, ...] = ()
        if rng.random() >= 0.8:
            row, first = rng.randint(1, ROWS), rng.randint(1, SEATS_PER_ROW - quantity + 1)
            seats = tuple(seat_id(SEATED_CODE, row, s) for s in range(first, first + quantity))
        stream.append(Request(token(), token(), quantity, seats))
    return stream


# ---------------------------------------------------------------- tallies


class Held(NamedTuple):
    """A successful hold as the mode's answer described it."""

    hold_id: str
    quantity: int
    seats: tuple[str, ...]


@dataclass
class Tally:
    latencies: list[float] = field(default_factory=list)
    held: list[Held] = field(default_factory=list)
    refused: int = 0
    failures: int = 0
    first_failure: str | None = None
    elapsed_s: float = 0.0

    def answer(self, latency_s: float, held: Held | None) -> None:
        self.latencies.append(latency_s)
        if held is None:
            self.refused += 1
        else:
            self.held.append(held)

    def fail(self, what: str, count: int = 1) -> None:
        self.failures += count
        if self.first_failure is None:
            self.first_failure = what


@dataclass
class RunResult:
    mode: str
    run: int
    answered: int
    elapsed_s: float
    holds_per_s: float
    p50_ms: float
    p99_ms: float
    successes: int
    refused: int
    failures: int
    tickets: int
    oversell: int
    first_failure: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def percentile_ms(latencies: Sequence[float], pct: int) -> float:
    if not latencies:
        return float("nan")
    if len(latencies) == 1:
        return latencies[0] * 1000
    return statistics.quantiles(latencies, n=100, method="inclusive")[pct - 1] * 1000


def result_of(mode: str, run: int, tally: Tally, oversell: int) -> RunResult:
    answered = len(tally.latencies)
    return RunResult(
        mode=mode,
        run=run,
        answered=answered,
        elapsed_s=tally.elapsed_s,
        holds_per_s=answered / tally.elapsed_s if tally.elapsed_s > 0 else 0.0,
        p50_ms=percentile_ms(tally.latencies, 50),
        p99_ms=percentile_ms(tally.latencies, 99),
        successes=len(tally.held),
        refused=tally.refused,
        failures=tally.failures,
        tickets=sum(h.quantity for h in tally.held),
        oversell=oversell,
        first_failure=tally.first_failure,
    )


async def drive(
    stream: Sequence[Request],
    callers: int,
    call: Callable[[Request], Awaitable[Held | None]],
    *,
    think_s: float = 0.0,
    seed: int = 0,
    time_box_s: float | None = None,
) -> Tally:
    """``callers`` tasks share one iterator over ``stream``: a closed loop, or an
    offered load when each caller pauses between requests.

    Pauses are exponential with mean ``think_s`` (from ``seed``): with a fixed pause,
    the callers answered by one batch would all come back together and fall
    into one batch again, so the load would clump into ever larger bursts.
    """
    tally = Tally()
    pending = iter(stream)
    pauses = random.Random(seed)
    gc.collect()
    gc.freeze()  # as an API worker does after start-up (api/app.py)
    start = time.perf_counter()
    deadline = start + time_box_s if time_box_s else float("inf")

    async def caller() -> None:
        if think_s:  # first arrivals spread out too, not all at t=0
            await asyncio.sleep(pauses.expovariate(1 / think_s))
        for request in pending:
            if time.perf_counter() >= deadline:
                return
            began = time.perf_counter()
            try:
                held = await call(request)
            except Exception as exc:
                tally.fail(f"{type(exc).__name__}: {exc}")
            else:
                tally.answer(time.perf_counter() - began, held)
            if think_s:
                await asyncio.sleep(pauses.expovariate(1 / think_s))

    await asyncio.gather(*(caller() for _ in range(callers)))
    tally.elapsed_s = time.perf_counter() - start
    return tally


# ---------------------------------------------------------------- oversell checks


def seat_disagreements(held: Sequence[Held], held_now: dict[str, str | None]) -> int:
    """Seats claimed by two successes, claimed but not held now, or held now but
    claimed by no success (or by another hold, where the owner is known)."""
    claims = Counter(seat for h in held for seat in h.seats)
    doubled = sum(n - 1 for n in claims.values())
    owner = {seat: h.hold_id for h in held for seat in h.seats}
    missing = sum(1 for seat in owner if seat not in held_now)
    stray = sum(1 for seat in held_now if seat not in owner)
    wrong = sum(
        1 for seat, hold in held_now.items() if hold is not None and owner.get(seat, hold) != hold
    )
    return doubled + missing + stray + wrong


def redis_oversell(snapshot: Snapshot, held: Sequence[Held]) -> int:
    """Tickets beyond capacity, plus every way the successes and the final state disagree."""
    ga, seated = snapshot.section(GA_CODE), snapshot.section(SEATED_CODE)
    beyond = sum(max(0, s.held + s.sold - s.capacity) for s in (ga, seated))
    ga_granted = sum(h.quantity for h in held if not h.seats)
    distinct_seats = len({seat for h in held for seat in h.seats})
    held_now: dict[str, str | None] = {s: None for s, st in snapshot.seats.items() if st == "held"}
    return (
        beyond
        + abs(ga.held - ga_granted)
        + abs(seated.held - distinct_seats)
        + seat_disagreements(held, held_now)
    )
