"""The `onsale` command."""

from __future__ import annotations

import argparse
import logging
import sys

from api.settings import Settings


def main(argv: list[str] | None = None) -> int:
    from engine.runtime import keep_local_ray_on_loopback

    keep_local_ray_on_loopback()  # before any command imports Ray
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["simulate"]:  # its options are its own (argparse would take them here)
        from bench import simulate as simulator

        return simulator.main(argv[1:])
    parser = argparse.ArgumentParser(prog="onsale", description="Ticket on-sale engine.")
    commands = parser.add_subparsers(dest="command", required=True)
    up = commands.add_parser("up", help="start everything on the embedded default")
    up.add_argument("--workers", type=int, default=1)
    serve = commands.add_parser("serve", help="run the API (embedded servers if no URLs)")
    serve.add_argument("--workers", type=int, default=1)
    commands.add_parser("migrate", help="bring the database schema up to date")
    commands.add_parser("writer", help="write confirmed sales from the outbox to Postgres")
    commands.add_parser(
        "reconcile", help="settle with Stripe the orders whose payment webhook never came"
    )
    admin = commands.add_parser("create-admin", help="create an admin (or make a user one)")
    admin.add_argument("--email", required=True)
    admin.add_argument("--password", required=True)
    commands.add_parser(
        "simulate",
        help="N virtual buyers race for one event through the API (--event ID --users N)",
    )
    commands.add_parser("openapi")  # no help: for `make openapi`, not for operators
    bench = commands.add_parser("bench", help="benchmarks")
    bench.add_argument("name", choices=["engine", "writer", "http", "viewers", "memory", "queue"])
    bench.add_argument("args", nargs=argparse.REMAINDER, help="passed to the benchmark")

    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    if args.command in ("up", "serve"):
        from api.supervisor import serve as run

        run(Settings(), workers=args.workers, with_writer=args.command == "up")
        return 0
    if args.command == "migrate":
        from api.supervisor import embedded_stack

        with embedded_stack(Settings(), with_ray=False):  # upgrades the schema on entry
            logging.getLogger("onsale").info("schema is at the latest migration")
        return 0
    if args.command == "create-admin":
        return _create_admin(args.email, args.password)
    if args.command == "openapi":  # docs/openapi.json, which tests/test_api_contract.py pins
        from api.app import openapi_document

        sys.stdout.write(openapi_document())
        return 0
    if args.command == "reconcile":
        from api.supervisor import run_reconciler

        run_reconciler(Settings())
        return 0
    if args.command == "writer":
        from api.supervisor import run_writer

        run_writer(Settings())
        return 0
    if args.command == "bench":
        if args.name == "http":
            from bench import http as http_bench

            return http_bench.main(args.args)
        if args.name == "viewers":
            from bench import viewers as viewers_bench

            return viewers_bench.main(args.args)
        if args.name == "memory":
            from bench import memory as memory_bench

            return memory_bench.main(args.args)
        if args.name == "queue":
            from bench import queue as queue_bench

            return queue_bench.main(args.args)
        if args.name == "writer":
            from bench import writer as writer_bench

            return writer_bench.main(args.args)
        from bench import engine as engine_bench

        return engine_bench.main(args.args)
    parser.error(f"unknown command {args.command}")
    return 2


def _create_admin(email: str, password: str) -> int:
    import asyncio

    from api.schemas import RegisterIn
    from api.seed import create_admin
    from api.supervisor import embedded_stack
    from persistence.db import create_engine

    try:
        RegisterIn(email=email, password=password, name="Administrator")
    except ValueError as exc:
        print(f"onsale create-admin: {exc}", file=sys.stderr)
        return 2

    async def run(database_url: str) -> None:
        db = create_engine(database_url, pool_size=1)
        try:
            await create_admin(db, email, password)
        finally:
            await db.dispose()

    with embedded_stack(Settings(), with_ray=False) as ready:
        asyncio.run(run(ready.database_url or ""))
    print(f"{email} is an admin")
    return 0


if __name__ == "__main__":
    sys.exit(main())
