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
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from typing import Any, Protocol

import uvicorn

from api.broadcast import PROTOCOL as BROADCAST_PROTOCOL
from api.settings import Settings
from engine import runtime
from persistence import migrate

log = logging.getLogger("onsale")


class _Server(Protocol):
    def stop(self) -> None: ...


@contextlib.contextmanager
def embedded_stack(
    settings: Settings, *, with_ray: bool = True, with_payments: bool = False
) -> Iterator[Settings]:
    """Starts Valkey, Postgres and Ray where no URL/address says otherwise.

    Yields the settings with every URL filled in; the environment carries the
    same values to child processes. Whatever was started is stopped on exit.
    """
    started: list[_Server] = []
    data_dir = settings.data_dir.resolve()
    try:
        if not settings.redis_url:
            if settings.redis_cluster:
                raise RuntimeError("ONSALE_REDIS_CLUSTER=1 needs ONSALE_REDIS_URL (a cluster node)")
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
        if with_payments and not settings.stripe_secret_key:
            from sales.testmode import EmbeddedStripe, sandbox_key, webhook_secret

            localstripe = EmbeddedStripe(data_dir / "localstripe")
            started.append(localstripe)
            settings.stripe_api_base = localstripe.start()
            settings.stripe_secret_key = sandbox_key()
            settings.stripe_webhook_secret = webhook_secret(data_dir)
            webhook_url = f"http://{settings.host}:{settings.port}/webhooks/stripe"
            localstripe.register_webhook(webhook_url, settings.stripe_webhook_secret)
            log.info("localstripe on %s, webhooks to %s", settings.stripe_api_base, webhook_url)
        if settings.stripe_secret_key:
            os.environ["STRIPE_SECRET_KEY"] = settings.stripe_secret_key
            os.environ["STRIPE_WEBHOOK_SECRET"] = settings.stripe_webhook_secret or ""
            if settings.stripe_api_base:
                os.environ["ONSALE_STRIPE_API_BASE"] = settings.stripe_api_base
        migrate.upgrade(settings.database_url)  # `make up` always runs on the current schema
        os.environ["ONSALE_REDIS_URL"] = settings.redis_url
        os.environ["ONSALE_REDIS_CLUSTER"] = "1" if settings.redis_cluster else "0"
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
                redis_cluster=ready.redis_cluster,
                consumers=ready.writer_consumers,
                batch_size=ready.writer_batch_size,
                reclaim_idle_ms=ready.writer_reclaim_idle_ms,
                retire_after_s=ready.retire_after_s,
                retire_interval_s=ready.retire_interval_s,
            )

        asyncio.run(main())


def run_reconciler(settings: Settings) -> None:
    """`onsale reconcile` until SIGINT/SIGTERM: every order still waiting for
    its money is checked with Stripe (sales.reconcile)."""
    if not settings.stripe_secret_key:
        log.info("no STRIPE_SECRET_KEY: there are no payments to reconcile")
        return
    from engine.client import EngineClient
    from engine.redis_client import redis_client
    from persistence.db import create_engine
    from persistence.rebuild import PostgresRestore
    from sales.catalog import Cards
    from sales.payments import Payments
    from sales.reconcile import Reconciler
    from sales.settlement import Settlement

    with embedded_stack(settings) as ready:
        stop = asyncio.Event()

        async def main() -> None:
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, stop.set)
            redis_url, database_url = ready.redis_url or "", ready.database_url or ""
            engine = EngineClient(
                redis_url,
                redis_cluster=ready.redis_cluster,
                restore=PostgresRestore(database_url),
            )
            redis = redis_client(redis_url, cluster=ready.redis_cluster)
            db = create_engine(database_url, pool_size=2)
            payments = Payments(
                ready.stripe_secret_key or "",
                ready.stripe_webhook_secret or "",
                ready.stripe_api_base,
                timeout_s=ready.payments_timeout_s,
            )
            settlement = Settlement(
                db,
                engine,
                Cards(engine, db),
                redis,
                payments,
                payment_window_s=ready.payment_window_s,
            )
            try:
                reconciler = Reconciler(
                    settlement,
                    grace_s=ready.reconcile_grace_s,
                    claim_s=ready.reconcile_interval_s,
                )
                await reconciler.run(ready.reconcile_interval_s, stop)
            finally:
                await engine.aclose()
                await redis.aclose()
                await db.dispose()

        asyncio.run(main())


@contextlib.contextmanager
def child_process(command: str) -> Iterator[subprocess.Popen[bytes]]:
    """`onsale <command>` beside the API workers, on the servers the environment names."""
    proc = subprocess.Popen([sys.executable, "-m", "api.cli", command])
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
    """Runs the API on settings.host:port until interrupted; ``onsale up``
    (``with_writer``) also runs the writer and seeds an admin and a demo event."""
    with (
        embedded_stack(settings, with_payments=True) as ready,
        child_process("writer") if with_writer else contextlib.nullcontext(),
        child_process("reconcile") if with_writer else contextlib.nullcontext(),
    ):
        if with_writer:
            asyncio.run(_seed(ready))
        if workers > 1:  # every worker's metrics in one /metrics
            metrics_dir = ready.data_dir.resolve() / "metrics"
            shutil.rmtree(metrics_dir, ignore_errors=True)
            metrics_dir.mkdir(parents=True)
            os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(metrics_dir)
        uvicorn.run(
            "api.app:create_app",
            factory=True,
            host=ready.host,
            port=ready.port,
            workers=workers,
            log_level="info",
            **uvicorn_options(ready),
        )


def uvicorn_options(settings: Settings) -> dict[str, Any]:
    """How onsale serves HTTP and WebSockets, wherever uvicorn runs it."""
    return {
        "access_log": False,  # the app logs each request itself, as JSON with its id
        "lifespan": "on",
        # Longer than any client keeps an idle connection for reuse (httpx 5 s,
        # load balancers 60 s): a server that closes first races the client's
        # next request on that connection, which then fails with a reset.
        "timeout_keep_alive": settings.keep_alive_s,
        # Seat-map deltas are small and go to thousands of sockets: deflating
        # each copy would cost more CPU than the bytes are worth.
        "ws_per_message_deflate": False,
        "ws": BROADCAST_PROTOCOL,  # one frame written to every viewer (api/broadcast.py)
        "ws_max_size": 64 * 1024,
    }


async def _seed(settings: Settings) -> None:
    from api.seed import seed_admin, seed_demo_event
    from engine.client import EngineClient
    from persistence.db import create_engine
    from persistence.rebuild import PostgresRestore

    db = create_engine(settings.database_url or "", pool_size=2)
    engine = EngineClient(
        settings.redis_url or "",
        redis_cluster=settings.redis_cluster,
        restore=PostgresRestore(settings.database_url or ""),
    )
    try:
        admin = await seed_admin(db, settings.data_dir.resolve())
        event_id = await seed_demo_event(db, engine)
    finally:
        await engine.aclose()
        await db.dispose()
    base = f"http://{settings.host}:{settings.port}"
    payments = (
        f"localstripe at {settings.stripe_api_base} (test mode: card 4242 4242 4242 4242)"
        if settings.stripe_api_base
        else "Stripe (STRIPE_SECRET_KEY)"
    )
    print(
        f"""
  onsale is starting on {base}
    API docs       {base}/docs
    demo event     {base}/events/{event_id}  (seats: {base}/events/{event_id}/seats)
    live seat map  {base}/events/{event_id}/live
    admin          {admin.email} / {admin.password}
                   (saved in {settings.data_dir.resolve() / "admin-credentials.json"})
    payments       {payments}
""",
        flush=True,
    )
