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


def create_engine(url: str, *, pool_size: int = 10) -> AsyncEngine:
    return create_async_engine(async_url(url), pool_size=pool_size, pool_pre_ping=True)


async def ping(engine: AsyncEngine) -> bool:
    async with engine.connect() as conn:
        return (await conn.scalar(text("SELECT 1"))) == 1
