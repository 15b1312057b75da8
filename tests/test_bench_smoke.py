"""The engine benchmark still runs end to end and finds no oversell (tiny sizes:
figures come from `onsale bench engine`, never from a timed test)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path


def test_bench_engine_runs_all_three_modes_without_oversell(
    tmp_path: Path, redis_url: str, database_url: str
) -> None:
    out = tmp_path / "bench.json"
    env = {**os.environ, "ONSALE_REDIS_URL": redis_url, "ONSALE_DATABASE_URL": database_url}
    env.pop("RAY_ADDRESS", None)
    done = subprocess.run(
        [
            str(Path(sys.executable).with_name("onsale")),
            "bench",
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
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    figures = json.loads(out.read_text())
    modes = {run["mode"]: run for run in figures["runs"]}
    assert set(modes) == {"engine", "raw", "baseline"}
    for run in modes.values():
        assert run["oversell"] == 0 and run["failures"] == 0 and run["holds_per_s"] > 0
    assert "engine/baseline" in done.stdout


def test_bench_writer_persists_every_order_and_prints_its_ratios(
    tmp_path: Path, redis_url: str, database_url: str
) -> None:
    env = {**os.environ, "ONSALE_REDIS_URL": redis_url, "ONSALE_DATABASE_URL": database_url}
    env.pop("RAY_ADDRESS", None)
    done = subprocess.run(
        [
            str(Path(sys.executable).with_name("onsale")),
            "bench",
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
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "writer batch 100 / single-row loop" in done.stdout
    assert "writer batch 100 / engine sales" in done.stdout
