"""Liveness and readiness, for load balancers and `make up` users."""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from api.errors import ApiError
from api.observability import metrics_text
from api.problems import problem
from api.schemas import problem_responses
from engine import runtime
from engine.scripts import QUEUE_REGISTRY
from persistence.db import ping as ping_db
from persistence.writer import outbox_lag

router = APIRouter(tags=["operations"])

CHECK_TIMEOUT_S = 2.0


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """The process is up (nothing else is checked)."""
    return {"status": "ok"}


@router.get("/readyz", responses={503: {"description": "a dependency is unreachable"}})
async def readyz(request: Request) -> Any:
    """Redis, Postgres and Ray are all reachable from this worker."""
    state = request.app.state
    probes = {
        "redis": state.engine.ping_redis(),
        "postgres": ping_db(state.db),
        "ray": asyncio.to_thread(runtime.is_ready),
    }
    checks: dict[str, str] = {}
    for name, probe in probes.items():
        try:
            ok = await asyncio.wait_for(probe, CHECK_TIMEOUT_S)
            checks[name] = "ok" if ok else "unavailable"
        except Exception as exc:  # any failure means not ready; say which
            checks[name] = f"unavailable: {type(exc).__name__}"
    if all(v == "ok" for v in checks.values()):
        return JSONResponse({"status": "ready", "checks": checks})
    down = ", ".join(k for k, v in checks.items() if v != "ok")
    return problem(
        503,
        "not_ready",
        "A dependency is unreachable",
        f"unreachable: {down}",
        headers={"Retry-After": "5"},
        checks=checks,
        retry_after_s=5,
    )


@router.get("/metrics", response_class=Response, responses=problem_responses(403))
async def metrics(request: Request) -> Response:
    """Prometheus text format: request latency, holds by result, engine batch
    sizes and actor calls, and the outbox writer's lag. With
    ``ONSALE_METRICS_TOKEN`` set, for callers that send it as a bearer token;
    without, for loopback and private addresses only (a scraper beside the
    API, not the internet)."""
    _may_scrape(request)
    try:
        lag = await asyncio.wait_for(outbox_lag(request.app.state.redis), CHECK_TIMEOUT_S)
        writer_lag: tuple[int, float] | None = (lag.pending, lag.oldest_age_s)
    except Exception:  # Redis away: still serve this worker's own figures
        writer_lag = None
    try:
        rooms = await asyncio.wait_for(_rooms(request.app.state), CHECK_TIMEOUT_S)
    except Exception:  # Redis away: the rest still tells
        rooms = {}
    body, content_type = metrics_text(writer_lag, rooms)
    return Response(body, media_type=content_type)


async def _rooms(state: Any) -> dict[str, dict[str, Any]]:
    """Each open waiting room's figures (lua/queue.lua "state")."""
    events: Any = await state.redis.smembers(QUEUE_REGISTRY)
    rooms = {}
    for raw in sorted(events):
        event_id = raw.decode() if isinstance(raw, bytes) else str(raw)
        rooms[event_id] = await state.engine.queue(event_id, "state")
    return rooms


def _may_scrape(request: Request) -> None:
    token = request.app.state.settings.metrics_token
    if token:
        sent = request.headers.get("authorization", "")
        if not hmac.compare_digest(sent.encode(), f"Bearer {token}".encode()):
            raise ApiError("forbidden", "send the metrics token: Authorization: Bearer <token>")
        return
    host = request.client.host if request.client else ""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        raise ApiError("forbidden", "metrics are for loopback and private addresses") from None
    if not (address.is_loopback or address.is_private):
        raise ApiError("forbidden", "metrics are for loopback and private addresses")
