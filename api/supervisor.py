"""`onsale up` / `onsale serve`: start what is embedded, then the API workers.

Servers are started once, here, and every worker connects to the same ones:
their URLs (and the local Ray's address) are passed down in the environment.
Ctrl-C stops the workers, then the servers, in reverse order.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from typing import Protocol

import uvicorn

from api.settings import Settings
from engine import runtime
from persistence import migrate

log = logging.getLogger("onsale")


class _Server(Protocol):
    def stop(self) -> None: ...


@contextlib.contextmanager
def embedded_stack(settings: Settings, *, with_ray: bool = True) -> Iterator[Settings]:
    """Starts Valkey, Postgres and Ray where no URL/address says otherwise.

    Yields the settings with every URL filled in; the environment carries the
    same values to child processes. Whatever was started is stopped on exit.
    """
    started: list[_Server] = []
    data_dir = settings.data_dir.resolve()
    try:
        if not settings.redis_url:
            from persistence.embedded import EmbeddedValkey

            valkey = EmbeddedValkey(data_dir / "valkey")
            started.append(valkey)
            settings.redis_url = valkey.start()
            log.info("embedded Valkey on %s (data in %s)", settings.redis_url, valkey.data_dir)
        if not settings.database_url:
            from persistence.embedded import EmbeddedPostgres

            postgres = EmbeddedPostgres(data_dir / "postgres")
            started.append(postgres)
            settings.database_url = postgres.start()
            log.info("embedded Postgres on %s", settings.database_url)
        migrate.upgrade(settings.database_url)  # `make up` always runs on the current schema
        os.environ["ONSALE_REDIS_URL"] = settings.redis_url
        os.environ["ONSALE_DATABASE_URL"] = settings.database_url
        if with_ray:
            ray_address = runtime.connect(
                settings.ray_address,
                object_store_bytes=settings.ray_object_store_mb * 1024 * 1024,
            )
            log.info("Ray at %s", ray_address)
            os.environ["RAY_ADDRESS"] = settings.ray_address or ray_address
        yield settings
    finally:
        runtime.disconnect()
        for server in reversed(started):
            server.stop()
        log.info("stopped")


def run_writer(settings: Settings) -> None:
    """`onsale writer` until SIGINT/SIGTERM, on the embedded servers if no URLs are set."""
    from persistence.writer import run_writer as write_behind

    with embedded_stack(settings, with_ray=False) as ready:
        stop = asyncio.Event()

        async def main() -> None:
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, stop.set)
            await write_behind(
                ready.redis_url or "",
                ready.database_url or "",
                stop,
                consumers=ready.writer_consumers,
                batch_size=ready.writer_batch_size,
                reclaim_idle_ms=ready.writer_reclaim_idle_ms,
            )

        asyncio.run(main())


@contextlib.contextmanager
def writer_process() -> Iterator[subprocess.Popen[bytes]]:
    """A writer beside the API workers, on the servers the environment names."""
    proc = subprocess.Popen([sys.executable, "-m", "api.cli", "writer"])
    try:
        yield proc
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def serve(settings: Settings, workers: int = 1, *, with_writer: bool = False) -> None:
    """Runs the API on settings.host:port until interrupted."""
    with (
        embedded_stack(settings) as ready,
        writer_process() if with_writer else contextlib.nullcontext(),
    ):
        uvicorn.run(
            "api.app:create_app",
            factory=True,
            host=ready.host,
            port=ready.port,
            workers=workers,
            log_level="info",
            lifespan="on",
        )
