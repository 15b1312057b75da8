"""onsale on a real two-node Ray cluster (`ray start --head` and one
`ray start --address` worker on this machine): `onsale serve` joins it as a
client, and the events it puts on sale get actors spread over both nodes."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from api.security import hash_password, issue_access_token
from persistence import accounts, migrate
from persistence.embedded import free_port
from tests.api_support import PASSWORD, unique_email

BIN = Path(sys.executable).parent
EVENTS = 8
# A throwaway cluster on loopback: no token authentication (Ray 2.5x turns it
# on by default), no usage reports.
RAY_ENV = {"RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}

# Runs as a separate driver: this test process is already a client of the
# suite's own Ray, and a process joins one cluster only.
WHERE = """
import asyncio, json, sys
from engine import runtime
from engine.client import EngineClient

async def main(redis_url, events):
    engine = EngineClient(redis_url)
    try:
        return {e: await engine.actor_node(e) for e in events}
    finally:
        await engine.aclose()

runtime.connect(sys.argv[1])
import ray
nodes = [n["NodeID"] for n in ray.nodes() if n["Alive"]]
placed = asyncio.run(main(sys.argv[2], sys.argv[3].split(",")))
print(json.dumps({"nodes": nodes, "placed": placed}))
"""


def clean_env(**extra: str) -> dict[str, str]:
    """This environment without the Ray settings the suite's own Ray put in it
    (its address, and flags such as the one that forbids joining a worker)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    return {**env, **RAY_ENV, **extra}


def ray_start(args: list[str], env: dict[str, str]) -> None:
    done = subprocess.run(
        [str(BIN / "ray"), "start", *args], env=env, capture_output=True, text=True, timeout=180
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]


@pytest.fixture
def ray_cluster() -> Iterator[str]:
    """A head and one worker node, each with its own raylet and object store."""
    temp_dir = tempfile.mkdtemp(prefix="ray", dir="/tmp")  # short: raylet socket paths
    port = free_port()
    env = clean_env()
    common = ["--num-cpus=1", "--object-store-memory=100000000", "--disable-usage-stats"]
    try:
        ray_start(["--head", f"--port={port}", "--include-dashboard=false",
                   f"--temp-dir={temp_dir}", *common], env)  # fmt: skip
        ray_start([f"--address=127.0.0.1:{port}", *common], env)
        yield f"127.0.0.1:{port}"
    finally:
        # `ray stop` stops every Ray on the machine, the suite's own included:
        # stop only this cluster's processes, by its temp dir and port.
        subprocess.run(["pkill", "-9", "-f", f"{temp_dir}|127.0.0.1:{port}"], check=False)
        shutil.rmtree(temp_dir, ignore_errors=True)


def _serve(ray_address: str, redis_url: str, database_url: str, secret: str, log: Path) -> Any:
    port = free_port()
    env = clean_env(
        RAY_ADDRESS=ray_address,
        ONSALE_REDIS_URL=redis_url,
        ONSALE_DATABASE_URL=database_url,
        ONSALE_PORT=str(port),
        ONSALE_JWT_SECRET=secret,
        ONSALE_RATE_LIMITS="off",
        ONSALE_DATA_DIR=str(log.parent),
        ONSALE_LOG_LEVEL="WARNING",
    )
    server = subprocess.Popen(
        [str(BIN / "onsale"), "serve"], env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        assert server.poll() is None, log.read_text()[-3000:]
        try:
            if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                return server, base
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    server.kill()
    raise AssertionError("onsale serve did not become ready on the Ray cluster")


async def test_events_put_on_sale_by_onsale_get_actors_on_both_nodes(
    ray_cluster: str, redis_url: str, database_url: str, db: AsyncEngine, tmp_path: Path
) -> None:
    migrate.upgrade(database_url)
    redis_url = str(urlsplit(redis_url)._replace(path="/2").geturl())  # a database of its own
    secret = uuid.uuid4().hex
    organizer = await accounts.create_user(
        db, unique_email("organizer"), hash_password(PASSWORD), "O", "organizer"
    )
    auth = {"Authorization": f"Bearer {issue_access_token(secret, organizer.id, 'organizer', 600)}"}
    server, base = _serve(ray_cluster, redis_url, database_url, secret, tmp_path / "serve.log")
    try:
        events = []
        async with httpx.AsyncClient(base_url=base, timeout=60) as http:
            for i in range(EVENTS):
                event = (await http.post("/events", headers=auth, json={
                    "name": f"Spread {i}", "venue": "Hall", "starts_at": "2027-06-01T20:00:00Z",
                    "currency": "EUR"})).json()  # fmt: skip
                section = {"kind": "general", "code": "GA", "name": "Floor", "price_cents": 1000,
                           "capacity": 100}  # fmt: skip
                r = await http.post(f"/events/{event['id']}/sections", headers=auth, json=section)
                assert r.status_code == 201, r.text
                r = await http.post(f"/events/{event['id']}/publish", headers=auth)
                assert r.status_code == 200, r.text  # its actor loaded the inventory
                buyer = issue_access_token(secret, uuid.uuid4(), "customer", 600)
                r = await http.post(
                    f"/events/{event['id']}/holds",
                    headers={"Authorization": f"Bearer {buyer}"},
                    json={"section": "GA", "quantity": 2},
                )
                assert r.status_code == 201, r.text
                events.append(event["id"])
        where = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-c", WHERE, ray_cluster, redis_url, ",".join(events)],
            capture_output=True, text=True, timeout=180,
            env=clean_env(),
        )  # fmt: skip
        assert where.returncode == 0, where.stderr[-3000:]
        found = json.loads(where.stdout.strip().splitlines()[-1])
    finally:
        server.terminate()
        server.wait(timeout=30)
    assert len(found["nodes"]) == 2, found
    assert set(found["placed"]) == set(events)
    assert set(found["placed"].values()) == set(found["nodes"]), found  # both nodes host events
