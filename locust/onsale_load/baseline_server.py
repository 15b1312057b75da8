"""The seed-style baseline for the spike: ``bench/http_server.py``'s app (the
API as ``onsale serve`` runs it, plus ``POST /bench/pg-holds``: one Postgres
transaction per hold) on the embedded stack, with a GA stock to hold from and
an admin to organize the run's event. Rate limits off, no Stripe, no writer.

    .venv/bin/python locust/onsale_load/baseline_server.py \\
        --data-dir /tmp/pg-baseline/.onsale --port 8766 --stock 1000000
    .venv/bin/locust --config locust/scenarios/spike.conf --host http://127.0.0.1:8766 \\
        --data-dir /tmp/pg-baseline/.onsale --baseline-holds --seated 0x0 --ga 1000000

The run id and stock are written to ``<data-dir>/bench-baseline.json``, where
the scenario's oversell check finds them. Ctrl-C stops everything.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import signal
import uuid
from pathlib import Path

import asyncpg

from api.seed import seed_admin
from api.settings import Settings
from api.supervisor import embedded_stack
from bench.http import start_server
from bench.pg_baseline import PG_SCHEMA
from persistence.db import create_engine

BASELINE_FILE = "bench-baseline.json"


async def prepare(database_url: str, data_dir: Path, stock: int) -> str:
    db = create_engine(database_url, pool_size=1)
    try:
        await seed_admin(db, data_dir)  # admin-credentials.json, as `make up` writes it
    finally:
        await db.dispose()
    run_id = uuid.uuid4().hex
    conn = await asyncpg.connect(database_url.replace("+asyncpg", ""))
    try:
        await conn.execute(PG_SCHEMA)
        await conn.execute(
            "INSERT INTO bench_sections (run, code, stock) VALUES ($1, 'GA', $2)", run_id, stock
        )
    finally:
        await conn.close()
    (data_dir / BASELINE_FILE).write_text(json.dumps({"run": run_id, "stock": stock}))
    return run_id


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", type=Path, default=Path(".onsale-baseline"))
    parser.add_argument("--port", type=int, default=8766)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--stock", type=int, default=1_000_000)
    args = parser.parse_args()
    data_dir = args.data_dir.resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    with embedded_stack(Settings(data_dir=data_dir)) as ready:
        run_id = asyncio.run(prepare(ready.database_url or "", data_dir, args.stock))
        server = start_server(args.port, args.workers, secrets.token_urlsafe(32), run_id, data_dir)
        print(f"baseline on http://127.0.0.1:{args.port} (run {run_id}, stock {args.stock})")
        try:
            for sig in (signal.SIGINT, signal.SIGTERM):  # SIGINT too: ignored under nohup &
                signal.signal(sig, signal.default_int_handler)
            signal.pause()  # until Ctrl-C or SIGTERM
        except KeyboardInterrupt:
            pass
        finally:
            server.terminate()
            server.wait(timeout=30)


if __name__ == "__main__":
    main()
