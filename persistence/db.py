"""The SQLAlchemy async engine for onsale's Postgres (asyncpg driver)."""

from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine


def async_url(url: str) -> str:
    """``postgresql://…`` as operators write it, with the asyncpg driver implied."""
    for prefix in ("postgresql+asyncpg://", "postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+asyncpg://" + url[len(prefix) :]
    raise ValueError(f"not a postgres url: {url!r}")


def create_engine(
    url: str, *, pool_size: int = 10, max_overflow: int = 10, pool_timeout_s: float = 30.0
) -> AsyncEngine:
    """``pool_timeout_s``: how long a caller waits for a free connection before
    SQLAlchemy's TimeoutError (the API answers it 503 ``overloaded``)."""
    return create_async_engine(
        async_url(url),
        pool_size=pool_size,
        max_overflow=max_overflow,
        pool_timeout=pool_timeout_s,
        pool_pre_ping=True,
    )


async def ping(engine: AsyncEngine) -> bool:
    async with engine.connect() as conn:
        return (await conn.scalar(text("SELECT 1"))) == 1
