"""``onsale bench engine``: the engine against its raw ceiling and a Postgres baseline.

One hot event (50,000 general-admission tickets and a 10,000-seat seated
section) and one deterministic stream of hold requests, given to three modes:

engine
    ``--callers`` asyncio tasks calling one :class:`~engine.client.EngineClient`
    (coalescer -> Ray actor -> ``batch.lua``), the way the API does.
raw
    The same requests straight to Redis, one ``hold.lua`` call per request,
    pipelined (:meth:`InventoryScripts.apply_one_pipelined`): the ceiling of
    the scripts themselves, without Ray or coalescing.
baseline
    What typical ticketing backends do: one Postgres transaction per hold
    (a guarded ``UPDATE … stock >= n`` for GA, ``SELECT … FOR UPDATE`` on the
    seat rows for seated), through a pool of ``--pg-connections``.

Modes run interleaved ``--repeat`` times on fresh inventory; the report shows
medians, each run's figures, the engine/raw and engine/baseline ratios, and the
oversell found by reconciling every success with the final state (must be 0).
Exit status: 0, or 1 if any mode oversold or had failures (errors that are not
a sold-out or seats-unavailable answer).

This module is the command line; the benchmark itself is in
:mod:`bench.workload` (the event, the request stream, what a run measures),
:mod:`bench.engine_modes` (the three runners and the servers they run on),
:mod:`bench.pg_baseline` (the baseline's SQL) and :mod:`bench.report`.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from pathlib import Path

from rich.console import Console

from bench.engine_modes import run_all, running_servers
from bench.report import report, write_json
from bench.workload import MODES


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="onsale bench engine", description=__doc__.split("\n")[0])
    p.add_argument("--requests", type=int, default=20_000, help="hold requests per run")
    p.add_argument("--callers", type=int, default=1000, help="concurrent callers")
    p.add_argument("--repeat", type=int, default=3, help="interleaved runs; medians reported")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument(
        "--think-ms", type=float, default=0.0, help="mean pause of each caller between requests"
    )
    p.add_argument("--pipeline", type=int, default=200, help="raw: commands per pipeline")
    p.add_argument("--raw-workers", type=int, default=4, help="raw: concurrent pipelines")
    p.add_argument("--pg-connections", type=int, default=100, help="baseline: pool size")
    p.add_argument("--baseline-requests", type=int, default=4000, help="baseline: stream prefix")
    p.add_argument("--baseline-seconds", type=float, default=20.0, help="baseline: time box")
    p.add_argument("--warmup", type=int, default=1000, help="unreported requests per mode first")
    p.add_argument(
        "--modes", default=",".join(MODES), help="comma-separated subset of engine,raw,baseline"
    )
    p.add_argument("--json", type=Path, metavar="PATH", help="also write every figure as JSON")
    cfg = p.parse_args(argv)
    cfg.modes = [m for m in MODES if m in cfg.modes.split(",")]
    if not cfg.modes:
        p.error("--modes names none of engine, raw, baseline")
    if min(cfg.requests, cfg.callers, cfg.repeat, cfg.pipeline, cfg.raw_workers) < 1:
        p.error("--requests, --callers, --repeat, --pipeline and --raw-workers must be ≥ 1")
    return cfg


def main(argv: list[str] | None = None) -> int:
    cfg = parse_args(argv)
    console = Console()
    if not console.is_terminal:  # piped or captured: rich would assume 80 columns
        console = Console(width=120)
    logging.getLogger("ray").setLevel(logging.ERROR)  # start-up notices, not results
    with running_servers(cfg) as servers:
        results = asyncio.run(run_all(cfg, servers, console))
    outcome = report(results, cfg, console)
    if cfg.json:
        write_json(cfg.json, cfg, servers, results, outcome)
    return 1 if any(r.oversell or r.failures for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
