"""Operations: /metrics, JSON logs with request ids, `onsale create-admin`."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
from pythonjsonlogger.json import JsonFormatter
from sqlalchemy.ext.asyncio import AsyncEngine

from persistence import accounts
from tests.api_http import ApiWith
from tests.api_support import PASSWORD, on_sale_event, register, user_with_role


def _metric(text: str, name: str, **labels: str) -> float:
    wanted = ",".join(f'{k}="{v}"' for k, v in labels.items())
    prefix = f"{name}{{{wanted}}}" if labels else name
    values = [
        float(line.split()[-1]) for line in text.splitlines() if line.startswith(prefix + " ")
    ]
    return values[0] if values else 0.0


async def test_metrics_count_holds_by_result_and_show_batches_and_writer_lag(
    api_with: ApiWith, db: AsyncEngine
) -> None:
    async with api_with() as api:
        http = api.http
        before = (await http.get("/metrics")).text
        organizer = await user_with_role(db, http, "organizer")
        event = await on_sale_event(http, organizer)
        buyer = await register(http)
        path = f"/events/{event['id']}/holds"
        assert (
            await http.post(path, json={"seats": ["A-1-1"]}, headers=buyer.auth)
        ).status_code == 201
        assert (
            await http.post(path, json={"seats": ["A-1-1"]}, headers=buyer.auth)
        ).status_code == 409
        after = (await http.get("/metrics")).text
    assert (
        _metric(after, "onsale_holds_total", result="held")
        == _metric(before, "onsale_holds_total", result="held") + 1
    )
    assert (
        _metric(after, "onsale_holds_total", result="seats_unavailable")
        == _metric(before, "onsale_holds_total", result="seats_unavailable") + 1
    )
    assert (
        _metric(after, "onsale_engine_batch_ops_count")
        >= _metric(before, "onsale_engine_batch_ops_count") + 2
    )
    assert _metric(after, "onsale_actor_calls_total", outcome="ok") > 0
    assert "onsale_writer_pending_entries" in after and "onsale_writer_oldest_age_seconds" in after
    route = 'route="/events/{event_id}/holds"'
    assert any(route in line and 'status="201"' in line for line in after.splitlines())


async def test_every_request_logs_one_json_line_with_its_request_id(
    api_with: ApiWith, db: AsyncEngine, caplog: pytest.LogCaptureFixture
) -> None:
    async with api_with() as api:
        http = api.http
        with caplog.at_level(logging.INFO, logger="onsale.access"):
            response = await http.get("/events/nope", headers={"X-Request-ID": "req-42"})
    assert response.status_code == 404 and response.headers["x-request-id"] == "req-42"
    [line] = [
        r for r in caplog.records if r.name == "onsale.access" and r.getMessage() == "request"
    ]
    assert (line.request_id, line.status, line.route) == ("req-42", 404, "/events/{event_id}")  # type: ignore[attr-defined]
    [formatter] = [
        h.formatter for h in logging.getLogger().handlers if isinstance(h.formatter, JsonFormatter)
    ]
    assert json.loads(formatter.format(line))["request_id"] == "req-42"


async def test_create_admin_makes_an_admin_who_can_log_in(
    redis_url: str, database_url: str, db: AsyncEngine, tmp_path: Path
) -> None:
    email = f"ops-{os.getpid()}-{tmp_path.name[-6:]}@example.com"
    env = {**os.environ, "ONSALE_REDIS_URL": redis_url, "ONSALE_DATABASE_URL": database_url,
           "ONSALE_DATA_DIR": str(tmp_path)}  # fmt: skip
    onsale = str(Path(sys.executable).with_name("onsale"))
    done = await asyncio.to_thread(
        subprocess.run,
        [onsale, "create-admin", "--email", email, "--password", PASSWORD],
        env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    account = await accounts.user_by_email(db, email)
    assert account is not None and account.role == "admin"
    refused = await asyncio.to_thread(
        subprocess.run,
        [onsale, "create-admin", "--email", "not-an-email", "--password", PASSWORD],
        env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert refused.returncode == 2 and await accounts.user_by_email(db, "not-an-email") is None
