"""The deployment files users run elsewhere still parse and name real settings."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import jsonschema
import ray
import yaml

from api.settings import Settings
from tests.tools import need_tool

ROOT = Path(__file__).resolve().parent.parent
# The Compose specification's JSON schema, as Debian's docker-compose ships it
# (apt-get install docker-compose).
COMPOSE_SPEC = Path("/usr/lib/python3/dist-packages/compose/config/compose_spec.json")


def test_ray_cluster_yaml_passes_rays_own_schema() -> None:
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = yaml.safe_load((ROOT / "ray_cluster.yaml").read_text())
    schema = Path(ray.__file__).parent / "autoscaler" / "ray-schema.json"
    jsonschema.validate(config, json.loads(schema.read_text()))  # the file as written
    validate_config(prepare_config(config))  # and as `ray up` fills it in
    head = " ".join(config["head_start_ray_commands"])
    assert "--port=6380" in head  # never Ray's default 6379, which Redis holds


def test_compose_api_service_uses_only_known_settings() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    env = compose["services"]["api"]["environment"]
    known = {f"ONSALE_{name.upper()}" for name in Settings.model_fields} | {"RAY_ADDRESS"}
    assert set(env) <= known
    assert env["RAY_ADDRESS"].endswith(":6380")


def test_compose_runs_a_writer_and_keeps_the_generated_keys_on_a_volume() -> None:
    """Without a writer no sale reaches Postgres; without the data volume a
    redeploy would forget the key every issued ticket is signed with."""
    services = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    assert services["writer"]["command"] == ["onsale", "writer"]
    assert services["reconcile"]["command"] == ["onsale", "reconcile"]
    for name in ("api", "writer"):
        data_dir = services[name]["environment"]["ONSALE_DATA_DIR"]
        assert any(v.endswith(f":{data_dir}") for v in services[name]["volumes"])


def test_compose_file_follows_the_compose_specification() -> None:
    """Checked twice, as `docker compose` would: against the specification's
    JSON schema, and by docker-compose's own `config` (no Docker engine needed)."""
    docker_compose = need_tool("docker-compose")
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    assert COMPOSE_SPEC.exists(), f"docker-compose is installed but {COMPOSE_SPEC} is not there"
    jsonschema.validate(compose, json.loads(COMPOSE_SPEC.read_text()))
    done = subprocess.run(
        [docker_compose, "-f", str(ROOT / "docker-compose.yml"), "config", "-q"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
