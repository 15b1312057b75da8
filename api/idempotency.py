"""``Idempotency-Key``: a retried POST gets the first response, not a second effect.

The first request with a key claims it in Redis (SET NX); its response is
stored under the caller, the route and the key — a success for 24 h, a 4xx
refusal for a minute (long enough for a client's immediate retries to get
the same answer, short enough that a retry after the state changed is
answered afresh rather than refused from memory for a day) —
with a fingerprint of the body. A retry with the same body gets the stored
response (with ``Idempotent-Replayed: true``); with a different body, 422
``idempotency_key_reused``; while the first is still running, 409
``idempotency_in_progress``. A 5xx is not stored: the client may retry it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi.responses import JSONResponse

from api.errors import ApiError, from_engine, from_sale
from engine.errors import EngineError
from engine.redis_client import AsyncRedis
from sales.errors import SaleRefused

KEEP_S = 24 * 3600
ERROR_KEEP_S = 60  # a refusal (4xx)
CLAIM_S = 30  # longer than any request may take; a crashed one frees its key


async def idempotent(
    redis: AsyncRedis,
    key: str | None,
    scope: str,
    body: Any,
    handler: Callable[[], Awaitable[tuple[int, Any]]],
) -> JSONResponse:
    """Runs ``handler`` once per (scope, key); ``handler`` returns (status, json body)."""
    if key is None:
        return await _run(handler)
    if not 1 <= len(key) <= 255:
        raise ApiError("validation_error", "Idempotency-Key must be 1 to 255 characters")
    fingerprint = hashlib.sha256(json.dumps(body, sort_keys=True, default=str).encode()).hexdigest()
    redis_key = "onsale:idem:" + hashlib.sha256(f"{scope}\0{key}".encode()).hexdigest()
    claimed = await redis.set(
        redis_key, json.dumps({"fingerprint": fingerprint}), nx=True, ex=CLAIM_S
    )
    if not claimed:
        stored = await redis.get(redis_key)
        record = json.loads(stored) if stored else {}
        if record.get("fingerprint") != fingerprint:
            raise ApiError("idempotency_key_reused")
        if "status" not in record:
            raise ApiError("idempotency_in_progress")
        return JSONResponse(
            record["body"],
            status_code=record["status"],
            headers={"Idempotent-Replayed": "true"},
            media_type=record.get("media_type", "application/json"),
        )
    try:
        response = await _run(handler)
    except BaseException:
        await redis.delete(redis_key)
        raise
    if response.status_code >= 500:
        await redis.delete(redis_key)
        return response
    record = {
        "fingerprint": fingerprint,
        "status": response.status_code,
        "body": json.loads(bytes(response.body)),
        "media_type": response.media_type,
    }
    keep_s = KEEP_S if response.status_code < 400 else ERROR_KEEP_S
    await redis.set(redis_key, json.dumps(record), ex=keep_s)
    return response


async def _run(handler: Callable[[], Awaitable[tuple[int, Any]]]) -> JSONResponse:
    try:
        status, body = await handler()
        return JSONResponse(body, status_code=status)
    except (ApiError, EngineError, SaleRefused) as exc:
        if isinstance(exc, ApiError):
            error = exc
        elif isinstance(exc, SaleRefused):
            error = from_sale(exc)
        else:
            error = from_engine(exc)
        if error.status >= 500:
            raise
        return error.response()
