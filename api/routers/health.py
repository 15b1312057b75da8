"""Liveness and readiness, for load balancers and `make up` users."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from api.problems import problem
from engine import runtime
from persistence.db import ping as ping_db

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
