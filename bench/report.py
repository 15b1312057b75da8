"""What ``onsale bench engine`` prints and writes.

The header (the machine, the servers and the run's parameters), a progress
line per run, then medians per mode in a table, each run's figures, the
ratios against the targets below with PASS or MISS, and, with ``--json``,
every figure in one file. Medians are over runs; failures and oversell are
summed instead, so that one bad run is not hidden by good ones.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import statistics
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import ray
from rich.console import Console
from rich.table import Table

from bench.workload import GA_CAPACITY, MODES, ROWS, SEATS_PER_ROW, RunResult

if TYPE_CHECKING:  # bench.engine_modes prints through this module
    from bench.engine_modes import Servers

TARGET_RAW_RATIO, TARGET_BASELINE_RATIO, TARGET_P99_MS = 0.5, 50.0, 25.0


def progress_line(r: RunResult) -> str:
    return (
        f"{r.mode:<8} {r.holds_per_s:>9,.0f} holds/s  p50 {r.p50_ms:6.1f} ms  "
        f"p99 {r.p99_ms:6.1f} ms  answered {r.answered:,}  oversell {r.oversell}"
    )


def summarize(results: Sequence[RunResult]) -> dict[str, dict[str, float]]:
    """Medians per mode; failures and oversell summed, so one bad run shows."""
    summary: dict[str, dict[str, float]] = {}
    for mode in MODES:
        runs = [r for r in results if r.mode == mode]
        if not runs:
            continue
        summary[mode] = {
            name: statistics.median(getattr(r, name) for r in runs)
            for name in ("holds_per_s", "p50_ms", "p99_ms", "answered", "successes", "refused",
                         "tickets")
        }  # fmt: skip
        summary[mode]["failures"] = sum(r.failures for r in runs)
        summary[mode]["oversell"] = sum(r.oversell for r in runs)
    return summary


def ratios(summary: dict[str, dict[str, float]]) -> dict[str, float]:
    out = {}
    engine_rate = summary.get("engine", {}).get("holds_per_s")
    for other in ("raw", "baseline"):
        other_rate = summary.get(other, {}).get("holds_per_s")
        if engine_rate is not None and other_rate:
            out[f"engine/{other}"] = engine_rate / other_rate
    return out


def machine() -> dict[str, Any]:
    model = platform.processor()
    with contextlib.suppress(OSError):  # Linux: the CPU's marketing name
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {
        "node": platform.node(),
        "cores": os.cpu_count(),
        "cpu": model or "?",
        "python": platform.python_version(),
        "ray": ray.__version__,
    }


def header(cfg: argparse.Namespace, servers: Servers, console: Console) -> None:
    m = machine()
    console.print(
        f"[bold]onsale bench engine[/bold] — {m['node']}: {m['cores']} cores ({m['cpu']}), "
        f"Python {m['python']}, Ray {m['ray']}"
    )
    where = [f"{servers.versions.get(k, k)} {w}" for k, w in servers.where.items()]
    console.print(f"servers: {'; '.join(where)}")
    console.print(
        f"one event: GA {GA_CAPACITY:,} tickets + seated {ROWS}x{SEATS_PER_ROW}; "
        f"{cfg.requests:,} requests (80 % GA 1-4, 20 % 1-4 adjacent seats, seed {cfg.seed}), "
        f"{cfg.callers:,} callers, think {cfg.think_ms:g} ms; repeat {cfg.repeat}, "
        f"warm-up {cfg.warmup:,}; modes {', '.join(cfg.modes)}"
    )
    console.print(
        f"raw: {cfg.raw_workers} workers x pipelines of {cfg.pipeline}; baseline: "
        f"{cfg.pg_connections} connections, first {cfg.baseline_requests:,} requests "
        f"or {cfg.baseline_seconds:g} s"
    )


def results_table(summary: dict[str, dict[str, float]]) -> Table:
    table = Table(title="medians over runs (failures and oversell: totals over runs)")
    for column in ("mode", "holds/s", "p50 ms", "p99 ms", "answered", "successes", "refused",
                   "tickets held", "failures", "oversell"):  # fmt: skip
        table.add_column(column, justify="left" if column == "mode" else "right")
    for mode, s in summary.items():
        oversell = f"[{'green' if s['oversell'] == 0 else 'bold red'}]{s['oversell']:.0f}[/]"
        table.add_row(
            mode, f"{s['holds_per_s']:,.0f}", f"{s['p50_ms']:.1f}", f"{s['p99_ms']:.1f}",
            f"{s['answered']:,.0f}", f"{s['successes']:,.0f}", f"{s['refused']:,.0f}",
            f"{s['tickets']:,.0f}", f"{s['failures']:.0f}", oversell,
        )  # fmt: skip
    return table


def verdict(ok: bool) -> str:
    return "[bold green]PASS[/]" if ok else "[bold red]MISS[/]"


def print_runs(results: Sequence[RunResult], console: Console) -> None:
    for mode in MODES:
        runs = [r for r in results if r.mode == mode]
        if not runs:
            continue
        each_rate = " / ".join(f"{r.holds_per_s:,.0f}" for r in runs)
        each_p99 = " / ".join(f"{r.p99_ms:.1f}" for r in runs)
        line = f"{mode:<8} runs: {each_rate} holds/s · p99 {each_p99} ms"
        if mode == "engine":
            per_batch = [r.extra["ops"] / max(1, r.extra["batches"]) for r in runs]
            line += f" · ops per actor batch {' / '.join(f'{b:.0f}' for b in per_batch)}"
        console.print(line)
        for r in runs:
            if r.first_failure:
                console.print(f"[red]{mode} run {r.run}: first failure: {r.first_failure}[/]")


def print_targets(
    summary: dict[str, dict[str, float]], cfg: argparse.Namespace, console: Console
) -> dict[str, bool]:
    rates = ratios(summary)
    checks: dict[str, bool] = {}
    if "engine/raw" in rates:
        value = rates["engine/raw"]
        checks["engine/raw"] = value >= TARGET_RAW_RATIO
        line = f"engine/raw = {value:.2f} (target ≥ {TARGET_RAW_RATIO})"
        console.print(f"{line} {verdict(checks['engine/raw'])}")
    if "engine/baseline" in rates:
        value = rates["engine/baseline"]
        checks["engine/baseline"] = value >= TARGET_BASELINE_RATIO
        line = f"engine/baseline = {value:.1f} (target ≥ {TARGET_BASELINE_RATIO:g})"
        console.print(f"{line} {verdict(checks['engine/baseline'])}")
    if "engine" in summary:
        value = summary["engine"]["p99_ms"]
        checks["p99"] = value <= TARGET_P99_MS
        line = f"p99 engine = {value:.1f} ms (target ≤ {TARGET_P99_MS:g} ms)"
        console.print(f"{line} {verdict(checks['p99'])}")
        if not cfg.think_ms:  # Little's law: what no closed loop can beat on average
            floor = cfg.callers / summary["engine"]["holds_per_s"] * 1000
            console.print(
                f"[dim]  closed loop: {cfg.callers:,} callers / "
                f"{summary['engine']['holds_per_s']:,.0f} holds/s = {floor:.1f} ms mean latency "
                "by Little's law; --think-ms N shows latency at an offered load[/dim]"
            )
    checks["oversell"] = all(s["oversell"] == 0 for s in summary.values())
    oversold = ", ".join(f"{m} {s['oversell']:.0f}" for m, s in summary.items())
    console.print(f"oversell: {oversold} (target 0) {verdict(checks['oversell'])}")
    return checks


def report(
    results: Sequence[RunResult], cfg: argparse.Namespace, console: Console
) -> dict[str, Any]:
    summary = summarize(results)
    console.print(results_table(summary))
    print_runs(results, console)
    checks = print_targets(summary, cfg, console)
    return {"medians": summary, "ratios": ratios(summary), "checks": checks}


def write_json(
    path: Path,
    cfg: argparse.Namespace,
    servers: Servers,
    results: Sequence[RunResult],
    outcome: dict[str, Any],
) -> None:
    """The machine, servers and parameters, every run, and :func:`report`'s ``outcome``."""

    def clean(value: Any) -> Any:  # NaN (a mode with no answers) is not JSON
        if isinstance(value, float) and value != value:
            return None
        if isinstance(value, dict):
            return {k: clean(v) for k, v in value.items()}
        if isinstance(value, list):
            return [clean(v) for v in value]
        return value

    payload = {
        "machine": machine(),
        "servers": {"where": servers.where, "versions": servers.versions},
        "params": {k: str(v) if isinstance(v, Path) else v for k, v in vars(cfg).items()},
        "runs": [asdict(r) for r in results],
        **outcome,
    }
    path.write_text(json.dumps(clean(payload), indent=2) + "\n", encoding="utf-8")
