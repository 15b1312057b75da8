"""The `onsale` command."""

from __future__ import annotations

import argparse
import logging
import sys

from api.settings import Settings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="onsale", description="Ticket on-sale engine.")
    commands = parser.add_subparsers(dest="command", required=True)
    up = commands.add_parser("up", help="start everything on the embedded default")
    up.add_argument("--workers", type=int, default=1)
    serve = commands.add_parser("serve", help="run the API (embedded servers if no URLs)")
    serve.add_argument("--workers", type=int, default=1)
    commands.add_parser("migrate", help="bring the database schema up to date")
    commands.add_parser("writer", help="write confirmed sales from the outbox to Postgres")
    bench = commands.add_parser("bench", help="benchmarks")
    bench.add_argument("name", choices=["engine", "writer"])
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
    if args.command == "writer":
        from api.supervisor import run_writer

        run_writer(Settings())
        return 0
    if args.command == "bench":
        if args.name == "writer":
            from bench import writer as writer_bench

            return writer_bench.main(args.args)
        from bench import engine as engine_bench

        return engine_bench.main(args.args)
    parser.error(f"unknown command {args.command}")
    return 2


if __name__ == "__main__":
    sys.exit(main())
