"""``onsale bench http``: POST /events/{id}/holds against GET /healthz and a
seed-style Postgres hold, on one server, in one run.

Starts the embedded stack and ``onsale serve``'s app (plus the reference
route of :mod:`bench.http_server`) in a subprocess with ``--workers`` uvicorn
workers, mints a customer's JWT, and drives each mode in turn for
``--duration`` seconds over ``--connections`` keep-alive connections, with
**wrk** (``apt-get install wrk``) or, without it, a small asyncio client of
this module. Modes are interleaved ``--repeat`` times; medians and ratios are
printed:

healthz    GET /healthz: the stack's ceiling (no auth, no engine)
holds      POST /events/{id}/holds {"section": "GA", "quantity": 1} with a JWT
baseline   POST /bench/pg-holds, same body and JWT: a transaction per hold
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import httpx
from rich.console import Console
from rich.table import Table

from api.security import issue_access_token
from api.settings import Settings
from api.supervisor import embedded_stack
from bench.http_server import BASELINE_RUN
from bench.pg_baseline import PG_SCHEMA
from engine.client import EngineClient
from persistence.db import create_engine
from persistence.embedded import free_port
from persistence.events import EventDraft, SectionSpec
from sales import catalog
from sales.vocabulary import Role, SectionKind

GA_CAPACITY = 50_000_000
MODES = ("healthz", "holds", "baseline")
TARGET_VS_HEALTHZ = 0.6
TARGET_P99_MS = 150.0
TARGET_VS_BASELINE = 5.0


@dataclass
class Load:
    mode: str
    run: int
    requests: int
    seconds: float
    failures: int  # non-2xx answers and socket errors
    p50_ms: float
    p99_ms: float

    @property
    def per_s(self) -> float:
        return self.requests / self.seconds


@dataclass(frozen=True)
class Target:
    method: str
    path: str
    body: bytes
    headers: dict[str, str]
    tokens: tuple[str, ...] = ()  # bearer tokens, taken in turn (the buyers)
    keyed: bool = False  # a fresh Idempotency-Key on every request, as clients send

    def headers_for(self, n: int, prefix: str) -> dict[str, str]:
        headers = dict(self.headers)
        if self.tokens:
            headers["Authorization"] = f"Bearer {self.tokens[n % len(self.tokens)]}"
        if self.keyed:
            headers["Idempotency-Key"] = f"{prefix}-{n}"
        return headers


# ---------------------------------------------------------------- load generators

WRK_SCRIPT = """
local tokens = {{{tokens}}}
local keyed = {keyed}
local n, prefix = 0, ""
function init(args)
  math.randomseed(os.time() + math.floor(os.clock() * 1e6))
  prefix = string.format("%08x%08x", math.random(0, 0x7fffffff), math.random(0, 0x7fffffff))
end
function request()
  n = n + 1
  local headers = {{}}
{headers}
  if #tokens > 0 then headers["Authorization"] = "Bearer " .. tokens[n % #tokens + 1] end
  if keyed then headers["Idempotency-Key"] = prefix .. "-" .. n end
  return wrk.format("{method}", nil, headers, '{body}')
end
"""


def run_wrk(
    base: str, target: Target, connections: int, seconds: float, threads: int
) -> tuple[int, float, int, float, float]:
    headers = "\n".join(f'  headers["{k}"] = "{v}"' for k, v in target.headers.items())
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write(
            WRK_SCRIPT.format(
                method=target.method,
                body=target.body.decode(),
                headers=headers,
                tokens=", ".join(f'"{t}"' for t in target.tokens),
                keyed="true" if target.keyed else "false",
            )
        )
    try:
        out = subprocess.run(
            ["wrk", "--latency", f"-t{threads}", f"-c{connections}", f"-d{seconds:g}s",
             "--timeout", "10s", "-s", script.name, base + target.path],
            capture_output=True, text=True, check=True,
        ).stdout  # fmt: skip
    finally:
        os.unlink(script.name)
    requests = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    elapsed = _wrk_duration(re.search(r"requests in ([\d.]+\w+),", out).group(1))  # type: ignore[union-attr]
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    socket = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    failures = (int(non2xx.group(1)) if non2xx else 0) + (
        sum(int(g) for g in socket.groups()) if socket else 0
    )
    p50 = _wrk_ms(re.search(r"50%\s+([\d.]+\w+)", out).group(1))  # type: ignore[union-attr]
    p99 = _wrk_ms(re.search(r"99%\s+([\d.]+\w+)", out).group(1))  # type: ignore[union-attr]
    return requests, elapsed, failures, p50, p99


def _wrk_ms(text: str) -> float:
    value, unit = re.match(r"([\d.]+)(\w+)", text).groups()  # type: ignore[union-attr]
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0}[unit]


def _wrk_duration(text: str) -> float:
    return _wrk_ms(text) / 1000


async def run_asyncio(
    base: str, target: Target, connections: int, seconds: float
) -> tuple[int, float, int, float, float]:
    """Keep-alive HTTP/1.1 over raw asyncio streams: no client library in
    the way, so the server is what is measured (slower than wrk)."""
    host, port = base.removeprefix("http://").split(":")

    def request(n: int, prefix: str) -> bytes:
        head = f"{target.method} {target.path} HTTP/1.1\r\nHost: {host}\r\n" + "".join(
            f"{k}: {v}\r\n" for k, v in target.headers_for(n, prefix).items()
        )
        return (head + f"Content-Length: {len(target.body)}\r\n\r\n").encode() + target.body

    latencies: list[float] = []
    failures = 0
    deadline = time.perf_counter() + seconds

    async def connection() -> None:
        nonlocal failures
        reader, writer = await asyncio.open_connection(host, int(port))
        prefix, n = uuid.uuid4().hex[:16], 0
        try:
            while time.perf_counter() < deadline:
                began = time.perf_counter()
                n += 1
                writer.write(request(n, prefix))
                status_line = await reader.readline()
                length = 0
                while (line := await reader.readline()) not in (b"\r\n", b""):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":")[1])
                await reader.readexactly(length)
                latencies.append(time.perf_counter() - began)
                if not status_line.split(b" ")[1].startswith(b"2"):
                    failures += 1
        finally:
            writer.close()

    began = time.perf_counter()
    results = await asyncio.gather(
        *(connection() for _ in range(connections)), return_exceptions=True
    )
    elapsed = time.perf_counter() - began
    failures += sum(1 for r in results if isinstance(r, BaseException))
    latencies.sort()
    pick = (
        (lambda q: latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1000)
        if latencies
        else (lambda q: 0.0)
    )
    return len(latencies), elapsed, failures, pick(0.5), pick(0.99)


# ---------------------------------------------------------------- set-up


async def prepare(database_url: str, redis_url: str) -> tuple[str, str]:
    """An on-sale event with a bottomless GA section, and the baseline's stock."""
    db = create_engine(database_url, pool_size=2)
    engine = EngineClient(redis_url)
    event_id = f"bench-http-{uuid.uuid4().hex[:8]}"
    run_id = uuid.uuid4().hex
    try:
        draft = EventDraft(  # no per-customer limit: the figures stay comparable
            "HTTP bench",
            "Bench",
            datetime.now(UTC),
            "EUR",
            hold_ttl_s=600,
            max_tickets_per_customer=0,
            max_held_per_customer=0,
        )
        floor = SectionSpec("GA", "Floor", 3000, SectionKind.GENERAL, capacity=GA_CAPACITY)
        await catalog.create_event(
            db, None, draft, [floor], event_id=event_id, max_places=GA_CAPACITY
        )
        await catalog.put_on_sale(db, engine, event_id)
    finally:
        await engine.aclose()
        await db.dispose()
    conn = await asyncpg.connect(database_url.replace("+asyncpg", ""))
    try:
        await conn.execute(PG_SCHEMA)
        await conn.execute(
            "INSERT INTO bench_sections (run, code, stock) VALUES ($1, 'GA', $2)",
            run_id,
            GA_CAPACITY,
        )
    finally:
        await conn.close()
    return event_id, run_id


def start_server(
    port: int, workers: int, secret: str, run_id: str, data_dir: Path
) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "ONSALE_RATE_LIMITS": "off",
        "ONSALE_JWT_SECRET": secret,
        "ONSALE_DATA_DIR": str(data_dir),
        BASELINE_RUN: run_id,
    }
    cmd = [
        sys.executable, "-m", "uvicorn", "bench.http_server:create_bench_app", "--factory",
        "--host", "127.0.0.1", "--port", str(port), "--workers", str(workers),
        "--no-access-log", "--log-level", "warning",
    ]  # fmt: skip
    return launch_until_ready(cmd, env, port)


def launch_until_ready(
    cmd: list[str], env: dict[str, str], port: int, timeout_s: float = 120
) -> subprocess.Popen[bytes]:
    """Starts an API server process and returns once its /readyz answers 200."""
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        if proc.poll() is not None:
            raise RuntimeError("the API server exited during start-up")
        time.sleep(0.2)
    proc.kill()
    raise RuntimeError(f"the API server did not become ready in {timeout_s:g} s")


# ---------------------------------------------------------------- run and report


def bench(
    cfg: argparse.Namespace, ready: Settings, data_dir: Path
) -> tuple[list[Load], dict[str, int]]:
    event_id, run_id = asyncio.run(prepare(ready.database_url or "", ready.redis_url or ""))
    secret = secrets.token_urlsafe(32)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    tokens = tuple(
        issue_access_token(secret, uuid.uuid4(), Role.CUSTOMER, 3600) for _ in range(cfg.buyers)
    )
    json_body = {"Content-Type": "application/json"}
    body = json.dumps({"section": "GA", "quantity": 1}).encode()
    keyed = not cfg.no_idempotency_key
    targets = {
        "healthz": Target("GET", "/healthz", b"", {}),
        "holds": Target("POST", f"/events/{event_id}/holds", body, json_body, tokens, keyed),
        "baseline": Target("POST", "/bench/pg-holds", body, json_body, tokens, keyed),
    }
    use_wrk = cfg.tool == "wrk" or (cfg.tool == "auto" and shutil.which("wrk"))
    server = start_server(port, cfg.workers, secret, run_id, data_dir)
    loads: list[Load] = []
    try:
        for run in range(cfg.repeat):
            for mode in cfg.modes:
                if use_wrk:
                    figures = run_wrk(
                        base, targets[mode], cfg.connections, cfg.duration, cfg.wrk_threads
                    )
                else:
                    figures = asyncio.run(
                        run_asyncio(base, targets[mode], cfg.connections, cfg.duration)
                    )
                loads.append(Load(mode, run, *figures))
        check = asyncio.run(_oversell_check(ready.redis_url or "", event_id, loads))
    finally:
        server.terminate()
        server.wait(timeout=30)
    return loads, check


async def _oversell_check(redis_url: str, event_id: str, loads: list[Load]) -> dict[str, int]:
    from redis.asyncio import Redis

    from engine.scripts import InventoryScripts

    redis = Redis.from_url(redis_url)
    try:
        snapshot = await InventoryScripts(redis).snapshot(event_id)
    finally:
        await redis.aclose()
    ga = snapshot.section("GA")
    answered = sum(x.requests - x.failures for x in loads if x.mode == "holds")
    return {"held": ga.held + ga.sold, "capacity": ga.capacity, "holds_answered_201": answered}


def report(
    cfg: argparse.Namespace, loads: list[Load], check: dict[str, int], tool: str
) -> dict[str, bool]:
    console = Console()
    table = Table(
        title=f"{cfg.connections} connections, {cfg.duration:g} s per run, "
        f"{cfg.workers} worker(s), {tool}; medians of {cfg.repeat}"
    )
    for column in ("mode", "requests/s", "p50 ms", "p99 ms", "failures", "runs (req/s)"):
        table.add_column(column, justify="left" if column == "mode" else "right")
    medians: dict[str, Load] = {}
    for mode in cfg.modes:
        runs = [x for x in loads if x.mode == mode]
        rate = statistics.median(x.per_s for x in runs)
        p50 = statistics.median(x.p50_ms for x in runs)
        p99 = statistics.median(x.p99_ms for x in runs)
        failures = sum(x.failures for x in runs)
        medians[mode] = Load(mode, -1, int(rate), 1.0, failures, p50, p99)
        table.add_row(mode, f"{rate:,.0f}", f"{p50:.1f}", f"{p99:.1f}", f"{failures:,}",
                      " / ".join(f"{x.per_s:,.0f}" for x in runs))  # fmt: skip
    console.print(table)
    checks: dict[str, bool] = {}
    holds = medians.get("holds")
    if holds and "healthz" in medians:
        ratio = holds.per_s / medians["healthz"].per_s
        checks["holds/healthz"] = ratio >= TARGET_VS_HEALTHZ
        console.print(f"holds/healthz = {ratio:.2f} (target >= {TARGET_VS_HEALTHZ})")
    if holds and "baseline" in medians:
        ratio = holds.per_s / medians["baseline"].per_s
        checks["holds/baseline"] = ratio >= TARGET_VS_BASELINE
        console.print(f"holds/baseline = {ratio:.1f}x (target >= {TARGET_VS_BASELINE:g}x)")
    if holds:
        checks["holds p99"] = holds.p99_ms <= TARGET_P99_MS
        console.print(f"holds p99 = {holds.p99_ms:.1f} ms (target <= {TARGET_P99_MS:g} ms)")
    oversold = check["held"] > check["capacity"]
    console.print(
        f"GA held+sold {check['held']:,} of {check['capacity']:,}; 2xx hold answers "
        f"{check['holds_answered_201']:,}; oversell {'YES' if oversold else 0}"
    )
    for name, ok in checks.items():
        console.print(f"  {name}: {'PASS' if ok else 'MISS'}")
    return checks


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="onsale bench http", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    parser.add_argument("--connections", type=int, default=500)
    parser.add_argument("--duration", type=float, default=15.0, help="seconds per run")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2, help="uvicorn workers")
    parser.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES))
    parser.add_argument("--tool", choices=["auto", "wrk", "asyncio"], default="auto")
    parser.add_argument("--wrk-threads", type=int, default=2)
    parser.add_argument("--buyers", type=int, default=20, help="tokens the holds take in turn")
    parser.add_argument(
        "--no-idempotency-key",
        action="store_true",
        help="send holds without a fresh Idempotency-Key each (as the figures before did)",
    )
    parser.add_argument("--json", type=Path, help="write every run's figures here")
    cfg = parser.parse_args(argv)
    tool = (
        "wrk"
        if cfg.tool == "wrk" or (cfg.tool == "auto" and shutil.which("wrk"))
        else "asyncio client"
    )
    with (
        tempfile.TemporaryDirectory() as tmp,
        embedded_stack(Settings(data_dir=Path(tmp))) as ready,
    ):
        loads, check = bench(cfg, ready, Path(tmp))
    checks = report(cfg, loads, check, tool)
    if cfg.json:
        cfg.json.write_text(
            json.dumps(
                {"runs": [asdict(x) for x in loads], "check": check, "targets": checks}, indent=2
            )
        )
    return 0 if check["held"] <= check["capacity"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
