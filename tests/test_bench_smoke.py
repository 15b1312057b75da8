"""The benchmarks still run end to end, at tiny sizes: figures come from
`onsale bench …`, never from a timed test."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.tools import need_tool

pytestmark = pytest.mark.slow


def onsale_bench(args: list[str], redis_url: str, database_url: str) -> str:
    env = {**os.environ, "ONSALE_REDIS_URL": redis_url, "ONSALE_DATABASE_URL": database_url}
    env.pop("RAY_ADDRESS", None)
    done = subprocess.run(
        [str(Path(sys.executable).with_name("onsale")), "bench", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    return done.stdout


def test_bench_engine_runs_all_three_modes_without_oversell(
    tmp_path: Path, redis_url: str, database_url: str
) -> None:
    out = tmp_path / "bench.json"
    stdout = onsale_bench(
        [
            "engine",
            "--repeat",
            "1",
            "--requests",
            "600",
            "--callers",
            "50",
            "--baseline-requests",
            "200",
            "--warmup",
            "0",
            "--json",
            str(out),
        ],
        redis_url,
        database_url,
    )
    modes = {run["mode"]: run for run in json.loads(out.read_text())["runs"]}
    assert set(modes) == {"engine", "raw", "baseline"}
    for run in modes.values():
        assert run["oversell"] == 0 and run["failures"] == 0 and run["holds_per_s"] > 0
    assert "engine/baseline" in stdout


def test_bench_writer_persists_every_order_and_prints_its_ratios(
    redis_url: str, database_url: str
) -> None:
    stdout = onsale_bench(
        [
            "writer",
            "--repeat",
            "1",
            "--orders",
            "300",
            "--single-orders",
            "50",
            "--batch-sizes",
            "100",
            "--callers",
            "20",
        ],
        redis_url,
        database_url,
    )
    assert "writer batch 100 / single-row loop" in stdout
    assert "writer batch 100 / engine sales" in stdout


def test_bench_viewers_times_deltas_to_real_websocket_viewers(
    tmp_path: Path, redis_url: str, database_url: str
) -> None:
    out = tmp_path / "viewers.json"
    stdout = onsale_bench(
        ["viewers", "--viewers", "20", "--duration", "2", "--repeat", "1", "--rate", "200",
         "--reference-tick-ms", "0", "--sample", "0.5", "--client-procs", "1",
         "--json", str(out)],
        redis_url,
        database_url,
    )  # fmt: skip
    summary = json.loads(out.read_text())["summary"]
    assert summary["20@50ms"]["p50_ms"] >= 0 and summary["20@50ms"]["msg_per_s"] > 0
    assert "viewers on one API process" in stdout


def test_bench_http_drives_the_api_with_wrk_and_holds_no_more_than_answered(
    tmp_path: Path, redis_url: str, database_url: str
) -> None:
    """wrk, as the benchmark's figures are measured (Debian's, installed by
    `make test`): its output is parsed into rates and latencies."""
    need_tool("wrk")
    out = tmp_path / "http.json"
    stdout = onsale_bench(
        ["http", "--tool", "wrk", "--connections", "20", "--duration", "2", "--repeat", "1",
         "--workers", "1", "--json", str(out)],
        redis_url,
        database_url,
    )  # fmt: skip
    report = json.loads(out.read_text())
    runs = {run["mode"]: run for run in report["runs"]}
    assert {"healthz", "holds"} <= set(runs), runs
    for run in runs.values():
        assert run["requests"] > 0 and run["p50_ms"] > 0 and run["p99_ms"] >= run["p50_ms"]
    check = report["check"]
    assert check["held"] <= check["capacity"]
    assert check["held"] >= check["holds_answered_201"] > 0  # every 201 is a real hold
    assert "wrk" in stdout


def test_bench_queue_fills_a_room_and_times_its_reads_and_ticks(
    redis_url: str, database_url: str
) -> None:
    stdout = onsale_bench(["queue", "--waiting", "3000", "--burst", "500"], redis_url, database_url)
    assert "A waiting room with 3,000 people" in stdout
    assert re.search(r"one tick admitting 500 ", stdout), stdout  # all of the burst in one tick
    assert "joins, through lua/queue.lua" in stdout
