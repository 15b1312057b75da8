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
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from api.security import issue_access_token
from persistence import accounts, migrate
from persistence.embedded import free_port
from sales.vocabulary import Role
from tests.api_support import Served, password_hash, running_api, unique_email

pytestmark = pytest.mark.cluster
ORGANIZER = Role.ORGANIZER

BIN = Path(sys.executable).parent
ROOT = Path(__file__).resolve().parent.parent
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


async def test_events_put_on_sale_by_onsale_get_actors_on_both_nodes(
    ray_cluster: str, redis_url: str, database_url: str, db: AsyncEngine, tmp_path: Path
) -> None:
    migrate.upgrade(database_url)
    redis_url = str(urlsplit(redis_url)._replace(path="/2").geturl())  # a database of its own
    secret = uuid.uuid4().hex
    organizer = await accounts.create_user(
        db, unique_email("organizer"), password_hash(), "O", ORGANIZER
    )
    auth = {"Authorization": f"Bearer {issue_access_token(secret, organizer.id, ORGANIZER, 600)}"}
    served = Served(workers=1, env=clean_env(RAY_ADDRESS=ray_cluster), inherit_env=False)
    async with running_api(
        "serve",
        redis_url=redis_url,
        database_url=database_url,
        data_dir=tmp_path,
        served=served,
        jwt_secret=secret,
    ) as api:
        http = api.http
        events = []
        for i in range(EVENTS):
            event = (await http.post("/events", headers=auth, json={
                "name": f"Spread {i}", "venue": "Hall", "starts_at": "2027-06-01T20:00:00Z",
                "currency": "EUR"})).json()  # fmt: skip
            section = {"kind": "general", "code": "GA", "name": "Floor", "price_cents": 1000,
                       "capacity": 100}  # fmt: skip
            r = await http.post(f"/events/{event['id']}/sections", headers=auth, json=section)
            assert r.status_code == 201, r.text
            r = await http.post(f"/events/{event['id']}/publish", headers=auth, timeout=60)
            assert r.status_code == 200, r.text  # its actor loaded the inventory
            r = await http.post(
                f"/events/{event['id']}/holds",
                headers=api.bearer(uuid.uuid4()),
                json={"section": "GA", "quantity": 2},
                timeout=60,
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
    assert len(found["nodes"]) == 2, found
    assert set(found["placed"]) == set(events)
    assert set(found["placed"].values()) == set(found["nodes"]), found  # both nodes host events


@pytest.fixture
def foreign_ray() -> Iterator[dict[str, str]]:
    """Someone's `ray start --head` on this machine, on a port of its own: its
    address file is where a Ray started without an address would look for
    one to join. Yields the environment that sees it."""
    tmp = tempfile.mkdtemp(prefix="rayf", dir="/tmp")  # short: raylet socket paths
    port = free_port()
    env = clean_env(RAY_TMPDIR=tmp)
    try:
        ray_start(["--head", f"--port={port}", "--include-dashboard=false", "--num-cpus=1",
                   "--object-store-memory=100000000", "--disable-usage-stats"], env)  # fmt: skip
        assert (Path(tmp) / "ray" / "ray_current_cluster").exists()
        yield env
    finally:
        subprocess.run(["pkill", "-9", "-f", f"{tmp}|127.0.0.1:{port}"], check=False)
        shutil.rmtree(tmp, ignore_errors=True)


async def test_onsale_and_the_engine_tests_start_a_ray_of_their_own_beside_a_foreign_one(
    foreign_ray: dict[str, str], redis_url: str, database_url: str, db: AsyncEngine,
    tmp_path: Path,
) -> None:  # fmt: skip
    """With no RAY_ADDRESS, onsale never joins a Ray it finds on the machine
    (joining one fails: `object_store_memory must not be provided`)."""
    migrate.upgrade(database_url)
    own_redis = str(urlsplit(redis_url)._replace(path="/4").geturl())
    served = Served(workers=1, env=foreign_ray, inherit_env=False)
    async with running_api(
        "serve", redis_url=own_redis, database_url=database_url, data_dir=tmp_path, served=served
    ) as api:
        organizer = await accounts.create_user(
            db, unique_email("organizer"), password_hash(), "O", ORGANIZER
        )
        auth = api.bearer(organizer.id, ORGANIZER)
        event = (await api.http.post("/events", headers=auth, json={
            "name": "Beside", "venue": "Hall", "starts_at": "2027-06-01T20:00:00Z",
            "currency": "EUR"})).json()  # fmt: skip
        section = {"kind": "general", "code": "GA", "name": "Floor", "price_cents": 100,
                   "capacity": 10}  # fmt: skip
        assert (await api.http.post(f"/events/{event['id']}/sections", headers=auth,
                                    json=section)).status_code == 201  # fmt: skip
        r = await api.http.post(f"/events/{event['id']}/publish", headers=auth, timeout=60)
        assert r.status_code == 200, r.text
        r = await api.http.post(f"/events/{event['id']}/holds", headers=api.bearer(uuid.uuid4()),
                                json={"section": "GA", "quantity": 2}, timeout=60)  # fmt: skip
        assert r.status_code == 201, r.text
    engine_tests = await asyncio.to_thread(
        subprocess.run,
        # --basetemp: a pytest of its own tmp root would chmod /tmp/pytest-of-<user>
        # to 0700, and this suite's embedded Postgres (run as its own user, with
        # its data under that root) would crash at its next checkpoint.
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
         f"--basetemp={tmp_path / 'inner-pytest'}",
         "tests/test_engine_concurrency.py::test_thousand_buyers_for_the_last_seat_exactly_one_wins"],
        env=foreign_ray, capture_output=True, text=True, timeout=300,
        cwd=ROOT,
    )  # fmt: skip
    assert engine_tests.returncode == 0, engine_tests.stdout[-3000:] + engine_tests.stderr[-2000:]
