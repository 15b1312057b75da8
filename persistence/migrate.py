"""`onsale migrate`: Alembic, configured from code (no alembic.ini to keep in sync)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

from alembic import command
from alembic.config import Config

MIGRATIONS = Path(__file__).with_name("migrations")


def alembic_config(database_url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("sqlalchemy.url", database_url)
    return config


def _in_thread(fn: Callable[..., object], *args: object) -> None:
    """env.py runs its own event loop: keep it off any loop already running."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        fn(*args)
        return
    import threading

    errors: list[BaseException] = []

    def target() -> None:
        try:
            fn(*args)
        except BaseException as exc:  # re-raised in the caller's thread
            errors.append(exc)

    thread = threading.Thread(target=target)
    thread.start()
    thread.join()
    if errors:
        raise errors[0]


def upgrade(database_url: str, revision: str = "head") -> None:
    _in_thread(command.upgrade, alembic_config(database_url), revision)


def downgrade(database_url: str, revision: str = "base") -> None:
    _in_thread(command.downgrade, alembic_config(database_url), revision)
