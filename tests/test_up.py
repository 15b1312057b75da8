"""`onsale up` — the README's first command — as a user runs it, and the
embedded servers it is built on."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psutil
import pytest
import redis

from persistence.embedded import EmbeddedPostgres, EmbeddedValkey, free_port, postgres_bin_dir

pytestmark = pytest.mark.slow


def _wait_ready(url: str, proc: subprocess.Popen[bytes], deadline_s: float) -> httpx.Response:
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        if proc.poll() is not None:
            said = proc.stdout.read().decode(errors="replace") if proc.stdout else ""
            raise AssertionError(f"onsale up exited early ({proc.returncode}):\n{said[-4000:]}")
        try:
            response = httpx.get(url, timeout=2)
            if response.status_code == 200:
                return response
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"{url} not ready within {deadline_s}s")


def test_onsale_up_serves_health_and_stops_cleanly_on_ctrl_c(tmp_path: Path) -> None:
    port = free_port()
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("ONSALE_REDIS_URL", "ONSALE_DATABASE_URL", "RAY_ADDRESS")
    }
    env.update(ONSALE_DATA_DIR=str(tmp_path / "data"), ONSALE_PORT=str(port))
    onsale = Path(sys.executable).with_name("onsale")
    proc = subprocess.Popen(
        [str(onsale), "up"], env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    try:
        # A first start installs nothing but starts four servers and a Ray:
        # on a busy 2-core machine (the rest of the suite's Rays still
        # winding down) that has taken over two minutes.
        ready = _wait_ready(f"http://127.0.0.1:{port}/readyz", proc, deadline_s=240)
        assert ready.json()["checks"] == {"redis": "ok", "postgres": "ok", "ray": "ok"}
        assert httpx.get(f"http://127.0.0.1:{port}/healthz").json() == {"status": "ok"}
        # a new user can try the API at once: a demo event on sale, an admin to log in as
        demo = httpx.get(f"http://127.0.0.1:{port}/events/demo").json()
        assert demo["status"] == "on_sale"
        assert {s["code"]: s["capacity"] for s in demo["sections"]} == {"HALL": 3000, "FLOOR": 1500}
        credentials = json.loads((tmp_path / "data" / "admin-credentials.json").read_text())
        login = httpx.post(f"http://127.0.0.1:{port}/auth/login", json=credentials)
        assert login.status_code == 200 and login.json()["user"]["role"] == "admin"
        for secret in ("admin-credentials.json", "jwt-secret"):
            assert (tmp_path / "data" / secret).stat().st_mode & 0o077 == 0  # owner-only
        tree = psutil.Process(proc.pid).children(recursive=True)
        names = " ".join(" ".join(p.cmdline()) for p in tree if p.is_running())
        assert "valkey-server" in names and "postgres" in names and "raylet" in names
        assert "sales.testmode" in names  # payments in test mode, offline
        assert "api.cli writer" in names and "api.cli reconcile" in names
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=60) == 0
        banner = proc.stdout.read().decode() if proc.stdout else ""
        assert f"http://127.0.0.1:{port}/docs" in banner and credentials["password"] in banner
        _, alive = psutil.wait_procs(tree, timeout=20)
        assert [p.cmdline() for p in alive if p.status() != psutil.STATUS_ZOMBIE] == []
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert (tmp_path / "data" / "valkey").is_dir() and (tmp_path / "data" / "postgres").is_dir()


def test_embedded_servers_keep_their_data_across_a_restart(tmp_path: Path) -> None:
    valkey = EmbeddedValkey(tmp_path / "valkey")
    redis.Redis.from_url(valkey.start()).set("sale", "kept")
    valkey.stop()
    try:
        assert redis.Redis.from_url(valkey.start()).get("sale") == b"kept"
    finally:
        valkey.stop()

    postgres = EmbeddedPostgres(tmp_path / "pg")
    psql = str(postgres_bin_dir() / "psql")
    subprocess.run(
        [psql, postgres.start(), "-c", "CREATE TABLE kept (id int)"],
        check=True,
        capture_output=True,
    )
    postgres.stop()
    try:
        out = subprocess.run(
            [psql, postgres.start(), "-tAc", "SELECT to_regclass('kept')"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        assert out.strip() == "kept"
    finally:
        postgres.stop()
