"""The request guards, over HTTP against the real app: rate limits (per
login, per address), the body-size limit and X-Request-ID."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator

import httpx
from sqlalchemy.ext.asyncio import AsyncEngine

from api.security import hash_password
from persistence import accounts
from tests.api_http import (
    ApiWith,
    client_for,
    problem,
    random_client,
    users_with_email,
)
from tests.api_support import (
    PASSWORD,
    unique_email,
)

# ---------------------------------------------------------------- rate limits


async def test_the_fourth_login_for_one_email_from_one_client_is_rate_limited(
    api_with: ApiWith, db: AsyncEngine
) -> None:
    limits = "login=3/minute,holds=20/minute,global=1000/minute"
    email, other_email = unique_email("limited"), unique_email("notlimited")
    for each in (email, other_email):
        await accounts.create_user(db, each, hash_password(PASSWORD), "L", "customer")
    async with api_with(rate_limits=limits) as api:
        app = api.app
        assert app is not None
        address = random_client()
        async with client_for(app, address) as http:
            for _ in range(3):
                ok = await http.post("/auth/login", json={"email": email, "password": PASSWORD})
                assert ok.status_code == 200, ok.text
            r = await http.post("/auth/login", json={"email": email, "password": PASSWORD})
            body = problem(r, 429, "rate_limited")
            assert "access_token" not in body
            retry_after = int(r.headers["retry-after"])
            assert 1 <= retry_after <= 60
            assert isinstance(body["retry_after_s"], int) and 1 <= body["retry_after_s"] <= 60

            # The limit is per email: another account from the same client logs in.
            other = await http.post(
                "/auth/login", json={"email": other_email, "password": PASSWORD}
            )
            assert other.status_code == 200, other.text
            # The email in another case is the same email.
            upper = await http.post(
                "/auth/login", json={"email": email.upper(), "password": PASSWORD}
            )
            problem(upper, 429, "rate_limited")


async def test_the_global_limit_refuses_the_sixth_request_but_never_healthz(
    api_with: ApiWith,
) -> None:
    async with api_with(rate_limits="global=5/minute") as api:
        app = api.app
        assert app is not None
        address = random_client()
        async with client_for(app, address) as http:
            for _ in range(5):
                ok = await http.get("/events")
                assert ok.status_code == 200, ok.text
            r = await http.get("/events")
            body = problem(r, 429, "rate_limited")
            assert int(r.headers["retry-after"]) >= 1
            assert body["retry_after_s"] >= 1
            # Other routes share the one per-address limit.
            problem(await http.get("/auth/me"), 429, "rate_limited")
            # Probes are never limited.
            for _ in range(10):
                assert (await http.get("/healthz")).status_code == 200
        # Another client address has its own budget.
        other = random_client()
        while other[0] == address[0]:
            other = random_client()
        async with client_for(app, other) as http:
            assert (await http.get("/events")).status_code == 200


# ---------------------------------------------------------------- body size and request ids


async def test_a_body_over_max_body_bytes_is_413_and_creates_nothing(
    api_with: ApiWith, db: AsyncEngine
) -> None:
    async with api_with(max_body_bytes=1024) as api:
        http = api.http
        email = unique_email("big")
        big = {"email": email, "password": PASSWORD, "name": "N" * 2000}
        r = await http.post("/auth/register", json=big)
        problem(r, 413, "body_too_large")
        assert await users_with_email(db, email) == 0
        assert r.headers.get("x-request-id")

        # A body under the limit is accepted by the same app.
        small = await http.post(
            "/auth/register", json={"email": email, "password": PASSWORD, "name": "Small"}
        )
        assert small.status_code == 201, small.text


async def test_a_chunked_body_over_max_body_bytes_is_413(
    api_with: ApiWith, db: AsyncEngine
) -> None:
    """Without Content-Length the limit is counted as the body arrives."""
    async with api_with(max_body_bytes=1024) as api:
        http = api.http
        email = unique_email("chunked")
        payload = json.dumps({"email": email, "password": PASSWORD, "name": "N" * 2000}).encode()

        async def chunks() -> AsyncIterator[bytes]:
            for i in range(0, len(payload), 256):
                yield payload[i : i + 256]

        r = await http.post(
            "/auth/register", content=chunks(), headers={"Content-Type": "application/json"}
        )
        assert "content-length" not in r.request.headers
        problem(r, 413, "body_too_large")
        assert await users_with_email(db, email) == 0


async def test_x_request_id_is_echoed_and_generated_when_absent(http: httpx.AsyncClient) -> None:
    sent = f"req-{uuid.uuid4().hex}"
    r = await http.get("/healthz", headers={"X-Request-ID": sent})
    assert r.status_code == 200
    assert r.headers["x-request-id"] == sent

    # Echoed on error responses too.
    err = await http.get("/auth/me", headers={"X-Request-ID": sent + "-err"})
    problem(err, 401, "invalid_token")
    assert err.headers["x-request-id"] == sent + "-err"

    first = (await http.get("/healthz")).headers.get("x-request-id")
    second = (await http.get("/healthz")).headers.get("x-request-id")
    assert first and second and first != second
    assert len(first) >= 16
