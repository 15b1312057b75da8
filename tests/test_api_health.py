"""/healthz and /readyz in-process, including a dependency that is down."""

from __future__ import annotations

from pathlib import Path

import httpx

from api.app import create_app
from api.settings import Settings
from persistence.embedded import free_port
from tests.api_support import running_api


async def _get(redis_url: str, database_url: str, data_dir: Path, path: str) -> httpx.Response:
    async with running_api(
        "asgi", redis_url=redis_url, database_url=database_url, data_dir=data_dir
    ) as api:
        return await api.http.get(path)


async def test_readyz_is_ready_when_redis_postgres_and_ray_answer(
    redis_url: str, database_url: str, ray_local: str, tmp_path: Path
) -> None:
    response = await _get(redis_url, database_url, tmp_path, "/readyz")
    assert response.status_code == 200
    assert response.json() == {
        "status": "ready",
        "checks": {"redis": "ok", "postgres": "ok", "ray": "ok"},
    }


async def test_readyz_names_the_unreachable_dependency_as_problem_json(
    redis_url: str, ray_local: str, tmp_path: Path
) -> None:
    closed = f"postgresql://postgres@127.0.0.1:{free_port()}/postgres"
    response = await _get(redis_url, closed, tmp_path, "/readyz")
    assert response.status_code == 503
    assert response.headers["content-type"] == "application/problem+json"
    assert response.headers["retry-after"] == "5"
    body = response.json()
    assert body["code"] == "not_ready" and body["status"] == 503
    assert body["checks"]["redis"] == "ok" and body["checks"]["ray"] == "ok"
    assert body["checks"]["postgres"].startswith("unavailable")


def test_app_refuses_to_start_without_server_urls() -> None:
    try:
        create_app(Settings(redis_url=None, database_url=None))
    except RuntimeError as exc:
        assert "onsale up" in str(exc)
    else:
        raise AssertionError("create_app accepted missing URLs")
