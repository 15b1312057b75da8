"""The Postgres baseline: a hold the way a typical ticketing backend makes it.

One transaction per hold, through a connection pool: a guarded
``UPDATE … SET stock = stock - n WHERE stock >= n`` and an ``INSERT`` of the
hold for general admission, ``SELECT … FOR UPDATE`` on the seat rows then an
``UPDATE`` of them for seated. No engine, no Redis: what the engine is
measured against.

Every table is keyed by a ``run`` id, so runs (and repeats) share one schema
and never see each other's rows. The SQL is shared by every benchmark that
compares with Postgres: ``onsale bench engine`` (:mod:`bench.engine_modes`)
uses all of it; ``onsale bench http``'s ``POST /bench/pg-holds``
(:mod:`bench.http_server`) and the Locust spike's baseline server
(``locust/onsale_load/baseline_server.py``) create :data:`PG_SCHEMA` and take
GA stock with :data:`PG_TAKE_STOCK` and :data:`PG_INSERT_HOLD`.
"""

from __future__ import annotations

from collections.abc import Sequence

import asyncpg

from bench.workload import (
    GA_CAPACITY,
    GA_CODE,
    ROWS,
    SEATED_CODE,
    SEATS_PER_ROW,
    Held,
    Request,
    seat_disagreements,
)

PG_SCHEMA = """
CREATE TABLE IF NOT EXISTS bench_sections (
    run text NOT NULL, code text NOT NULL, stock integer NOT NULL,
    PRIMARY KEY (run, code));
CREATE TABLE IF NOT EXISTS bench_seats (
    run text NOT NULL, seat_id text NOT NULL, status text NOT NULL, hold_id text,
    PRIMARY KEY (run, seat_id));
CREATE TABLE IF NOT EXISTS bench_holds (
    run text NOT NULL, hold_id text NOT NULL, customer_id text NOT NULL,
    section text NOT NULL, quantity integer NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (run, hold_id));
"""
PG_LOAD_SEATS = """
INSERT INTO bench_seats (run, seat_id, status)
SELECT $1, $2 || '-' || r || '-' || s, 'available'
FROM generate_series(1, $3::int) AS r, generate_series(1, $4::int) AS s
"""
PG_TAKE_STOCK = """
UPDATE bench_sections SET stock = stock - $2
WHERE run = $1 AND code = $3 AND stock >= $2 RETURNING stock
"""
PG_INSERT_HOLD = """
INSERT INTO bench_holds (run, hold_id, customer_id, section, quantity) VALUES ($1, $2, $3, $4, $5)
"""
PG_LOCK_SEATS = """
SELECT seat_id, status FROM bench_seats
WHERE run = $1 AND seat_id = ANY($2::text[]) ORDER BY seat_id FOR UPDATE
"""
PG_HOLD_SEATS = """
UPDATE bench_seats SET status = 'held', hold_id = $3 WHERE run = $1 AND seat_id = ANY($2::text[])
"""


class _Rollback(Exception):
    """Leaves ``conn.transaction()`` by rolling back: the seats were not all free."""


async def pg_load(pool: asyncpg.Pool, run_id: str) -> None:
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute(
            "INSERT INTO bench_sections (run, code, stock) VALUES ($1, $2, $3)",
            run_id, GA_CODE, GA_CAPACITY,
        )  # fmt: skip
        await conn.execute(PG_LOAD_SEATS, run_id, SEATED_CODE, ROWS, SEATS_PER_ROW)
    async with pool.acquire() as conn:  # fresh rows: give the planner their statistics
        await conn.execute("ANALYZE bench_sections, bench_seats")


async def pg_unload(pool: asyncpg.Pool, run_id: str) -> None:
    """Deletes the run's rows: every run starts from tables as small as one run's,
    and a database named by ``ONSALE_DATABASE_URL`` is left with empty tables."""
    async with pool.acquire() as conn:
        for table in ("bench_holds", "bench_seats", "bench_sections"):
            await conn.execute(f"DELETE FROM {table} WHERE run = $1", run_id)


async def pg_hold_quantity(conn: asyncpg.Connection, run_id: str, request: Request) -> Held | None:
    async with conn.transaction():
        stock = await conn.fetchval(PG_TAKE_STOCK, run_id, request.quantity, GA_CODE)
        if stock is None:  # the guard refused: not enough left
            return None
        await conn.execute(
            PG_INSERT_HOLD, run_id, request.hold_id, request.customer_id,
            GA_CODE, request.quantity,
        )  # fmt: skip
    return Held(request.hold_id, request.quantity, ())


async def pg_hold_seats(conn: asyncpg.Connection, run_id: str, request: Request) -> Held | None:
    seats = list(request.seats)
    try:
        async with conn.transaction():
            rows = await conn.fetch(PG_LOCK_SEATS, run_id, seats)
            if len(rows) != len(seats) or any(r["status"] != "available" for r in rows):
                raise _Rollback
            await conn.execute(PG_HOLD_SEATS, run_id, seats, request.hold_id)
    except _Rollback:
        return None
    return Held(request.hold_id, len(seats), request.seats)


async def pg_oversell(pool: asyncpg.Pool, run_id: str, held: Sequence[Held]) -> int:
    """Stock below zero, plus every way the successes and the final rows disagree
    (the Postgres counterpart of :func:`bench.workload.redis_oversell`)."""
    async with pool.acquire() as conn:
        stock = await conn.fetchval(
            "SELECT stock FROM bench_sections WHERE run = $1 AND code = $2", run_id, GA_CODE
        )
        rows = await conn.fetch(
            "SELECT seat_id, hold_id FROM bench_seats WHERE run = $1 AND status = 'held'", run_id
        )
    ga_granted = sum(h.quantity for h in held if not h.seats)
    held_now: dict[str, str | None] = {r["seat_id"]: r["hold_id"] for r in rows}
    return (
        max(0, -stock)
        + abs((GA_CAPACITY - stock) - ga_granted)
        + seat_disagreements(held, held_now)
    )
