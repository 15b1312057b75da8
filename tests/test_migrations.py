"""Alembic migrations: up from empty, down to nothing, and in step with the models."""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from persistence import migrate
from persistence.db import create_engine
from persistence.models import Base
from sales.vocabulary import (
    ApplicationStatus,
    EventStatus,
    OrderStatus,
    PaymentStatus,
    Role,
    SectionKind,
    TicketStatus,
)

TABLES = {
    "users",
    "refresh_tokens",
    "organizer_applications",
    "events",
    "sections",
    "seats",
    "orders",
    "tickets",
    "payments",
    "processed_webhook_events",
    "checkins",
    "audit_log",
    "event_queues",
}


def _with_database(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{name}"))


@pytest.fixture
async def empty_database(database_url: str) -> AsyncIterator[str]:
    name = f"mig_{uuid.uuid4().hex[:10]}"
    admin = await asyncpg.connect(database_url.replace("+asyncpg", ""))
    await admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield _with_database(database_url, name)
    finally:
        await admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
        await admin.close()


async def _tables(url: str) -> set[str]:
    conn = await asyncpg.connect(url.replace("+asyncpg", ""))
    try:
        rows = await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        return {r["tablename"] for r in rows} - {"alembic_version"}
    finally:
        await conn.close()


async def test_migrations_run_up_from_empty_and_down_again(empty_database: str) -> None:
    assert await _tables(empty_database) == set()
    migrate.upgrade(empty_database)
    assert await _tables(empty_database) == TABLES
    migrate.downgrade(empty_database)
    assert await _tables(empty_database) == set()
    migrate.upgrade(empty_database)  # and up again: downgrade left nothing behind
    assert await _tables(empty_database) == TABLES


async def test_migrations_match_the_models(empty_database: str) -> None:
    migrate.upgrade(empty_database)
    engine = create_engine(empty_database)
    try:
        async with engine.connect() as conn:
            diff = await conn.run_sync(
                lambda sync: compare_metadata(MigrationContext.configure(sync), Base.metadata)
            )
    finally:
        await engine.dispose()
    assert diff == []


async def test_a_seat_cannot_be_sold_twice_even_by_a_direct_write(empty_database: str) -> None:
    migrate.upgrade(empty_database)
    conn = await asyncpg.connect(empty_database)
    try:
        await conn.execute("""
            INSERT INTO events (id, name, venue, starts_at, currency, status, hold_ttl_s,
                                max_tickets_per_customer)
            VALUES ('ev', 'Gig', 'Hall', now(), 'EUR', 'on_sale', 600, 0);
            INSERT INTO sections (id, event_id, code, name, kind, price_cents, rows,
                                  seats_per_row, capacity)
            VALUES ('00000000-0000-0000-0000-000000000001', 'ev', 'A', 'Stalls', 'seated',
                    5000, 1, 1, 1);
            INSERT INTO seats (event_id, id, section_id, row, number)
            VALUES ('ev', 'A-1-1', '00000000-0000-0000-0000-000000000001', 1, 1);
            INSERT INTO orders (id, event_id, customer_id, hold_id, status)
            VALUES ('o1', 'ev', 'c1', 'h1', 'paid'), ('o2', 'ev', 'c2', 'h2', 'paid');
            INSERT INTO tickets (id, order_id, event_id, section_code, seat_id, status)
            VALUES (gen_random_uuid(), 'o1', 'ev', 'A', 'A-1-1', 'valid');
        """)
        with pytest.raises(asyncpg.UniqueViolationError):
            await conn.execute("""INSERT INTO tickets (id, order_id, event_id, section_code,
                                  seat_id, status)
                                  VALUES (gen_random_uuid(), 'o2', 'ev', 'A', 'A-1-1', 'valid')""")
        # once the first sale is refunded the seat may be sold again
        await conn.execute("UPDATE tickets SET status = 'refunded' WHERE order_id = 'o1'")
        await conn.execute("""INSERT INTO tickets (id, order_id, event_id, section_code,
                              seat_id, status)
                              VALUES (gen_random_uuid(), 'o2', 'ev', 'A', 'A-1-1', 'valid')""")
    finally:
        await conn.close()


VOCABULARY = {
    ("users", "role_known"): Role,
    ("organizer_applications", "status_known"): ApplicationStatus,
    ("events", "status_known"): EventStatus,
    ("sections", "kind_known"): SectionKind,
    ("orders", "status_known"): OrderStatus,
    ("tickets", "status_known"): TicketStatus,
    ("payments", "status_known"): PaymentStatus,
}


async def test_every_status_column_admits_exactly_the_words_of_its_vocabulary(
    empty_database: str,
) -> None:
    """Alembic does not compare CHECK constraints: the migrated database's
    own constraints are read back and held to sales.vocabulary."""
    migrate.upgrade(empty_database)
    conn = await asyncpg.connect(empty_database.replace("+asyncpg", ""))
    try:
        for (table, name), words in VOCABULARY.items():
            definition = await conn.fetchval(
                "SELECT pg_get_constraintdef(oid) FROM pg_constraint "
                "WHERE conrelid = $1::regclass AND conname = $2",
                table,
                name,
            )
            assert definition, f"{table} has no constraint {name}"
            assert set(re.findall(r"'([a-z_]+)'", definition)) == {str(w) for w in words}, (
                table,
                definition,
            )
    finally:
        await conn.close()
