"""Request ids, JSON logs, the body-size limit and Prometheus metrics.

One pure ASGI middleware does the per-request work (no BaseHTTPMiddleware:
it would cost the hot path a task per request).
"""

from __future__ import annotations

import contextvars
import logging
import os
import re
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client import multiprocess as prometheus_multiprocess
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from pythonjsonlogger.json import JsonFormatter
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.errors import ApiError, as_problem

request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")
access_log = logging.getLogger("onsale.access")

REQUEST_SECONDS = Histogram(
    "onsale_http_request_duration_seconds",
    "HTTP request latency",
    ["method", "route", "status"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
HOLDS = Counter("onsale_holds_total", "Hold requests by result", ["result"])
BATCH_OPS = Histogram(
    "onsale_engine_batch_ops",
    "Commands per actor call (coalesced in this worker)",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512),
)
ACTOR_CALLS = Counter("onsale_actor_calls_total", "Actor calls by outcome", ["outcome"])
ACTOR_SECONDS = Histogram(
    "onsale_actor_call_seconds",
    "Actor call latency (one batch)",
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1),
)


def observe_batch(ops: int, seconds: float, ok: bool) -> None:
    """The engine client's hook: one call per actor batch."""
    BATCH_OPS.observe(ops)
    ACTOR_SECONDS.observe(seconds)
    ACTOR_CALLS.labels("ok" if ok else "error").inc()


class _Rooms:
    """The waiting rooms as Redis has them at scrape time (one reading per
    event: every worker reports the same figures, so no sum is needed)."""

    def __init__(self, rooms: dict[str, dict[str, Any]]) -> None:
        self.rooms = rooms

    def collect(self) -> Any:
        waiting = GaugeMetricFamily(
            "onsale_queue_waiting", "People waiting in an event's waiting room", labels=["event"]
        )
        active = GaugeMetricFamily(
            "onsale_queue_active", "Admitted buyers whose place in the sale lasts", labels=["event"]
        )
        rate = GaugeMetricFamily(
            "onsale_queue_admission_rate_per_minute",
            "The waiting room's admission rate now",
            labels=["event"],
        )
        admitted = CounterMetricFamily(
            "onsale_queue_admitted", "Admissions from the waiting room", labels=["event"]
        )
        expired = CounterMetricFamily(
            "onsale_queue_pass_expiries",
            "Places given up by passes (and holds) that lapsed",
            labels=["event"],
        )
        for event_id, room in self.rooms.items():
            waiting.add_metric([event_id], room["waiting"])
            active.add_metric([event_id], room["active"])
            rate.add_metric([event_id], room["rate"])
            admitted.add_metric([event_id], room["admitted_total"])
            expired.add_metric([event_id], room.get("expired_total", 0))
        return [waiting, active, rate, admitted, expired]


def metrics_text(
    writer_lag: tuple[int, float] | None, rooms: dict[str, dict[str, Any]] | None = None
) -> tuple[bytes, str]:
    """Every worker's metrics (multiprocess mode when PROMETHEUS_MULTIPROC_DIR
    is set, as ``onsale serve --workers N`` does), plus the writer's lag and
    the waiting rooms (``rooms``: event id -> lua/queue.lua's state)."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        prometheus_multiprocess.MultiProcessCollector(registry)
        body = generate_latest(registry)
    else:
        from prometheus_client import REGISTRY

        body = generate_latest(REGISTRY)
    if writer_lag is not None:
        lag = CollectorRegistry()
        Gauge(
            "onsale_writer_pending_entries",
            "Confirmed sales in the outbox not yet in Postgres",
            registry=lag,
        ).set(writer_lag[0])
        Gauge(
            "onsale_writer_oldest_age_seconds",
            "Age of the oldest confirmed sale not yet in Postgres",
            registry=lag,
        ).set(writer_lag[1])
        body += generate_latest(lag)
    if rooms:
        registry = CollectorRegistry()
        registry.register(_Rooms(rooms))
        body += generate_latest(registry)
    return body, CONTENT_TYPE_LATEST


class _RequestIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id.get()
        return True


def configure_logging(level: str = "INFO") -> None:
    """JSON lines on stderr, each with the request id of the request it belongs to."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        JsonFormatter(
            "{asctime}{levelname}{name}{message}{request_id}",
            style="{",
            rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
        )
    )
    handler.addFilter(_RequestIdFilter())
    root = logging.getLogger()
    # Replaces plain stream handlers (basicConfig's, or ours from an earlier
    # app); leaves others, such as a test's log capture, in place.
    root.handlers[:] = [h for h in root.handlers if type(h) is not logging.StreamHandler]
    root.addHandler(handler)
    root.setLevel(level.upper())


@dataclass(frozen=True)
class HotRoute:
    method: str
    pattern: re.Pattern[str]
    path: str  # the route's template, for metrics and logs
    # (scope, receive, send, *path groups); returning False hands the request
    # on to the app's own route (e.g. a case only that route answers)
    handler: Callable[..., Awaitable[bool | None]]


async def send_answer(
    send: Send,
    status: int,
    body: bytes,
    headers: dict[str, str],
    content_type: bytes = b"application/json",
) -> None:
    """A whole response from a hot route's handler, straight to ASGI."""
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                *([(b"content-type", content_type)] if status != 304 else []),
                (b"content-length", str(len(body)).encode()),
                *((k.lower().encode(), v.encode()) for k, v in headers.items()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def send_problem(send: Send, exc: Exception) -> None:
    """``exc`` as the app's exception handlers would answer it (problem+json)."""
    problem = as_problem(exc)
    body = bytes(problem.response().body)
    await send_answer(send, problem.status, body, problem.headers, b"application/problem+json")


class RequestMiddleware:
    """Request id in and out (``X-Request-ID``), body-size limit, latency
    metric and one access-log line per request."""

    def __init__(
        self,
        app: ASGIApp,
        max_body_bytes: int,
        hot: Sequence[HotRoute] = (),
        *,
        max_header_bytes: int = 16 * 1024,
        max_in_flight: int = 2000,
    ) -> None:
        """``hot``: routes answered here, ahead of the app's routing and its
        middleware, by an ASGI handler of their own (the hold route).
        ``max_in_flight``: requests this worker serves at once; past it,
        503 ``overloaded`` (uvicorn's own bound answers plain text)."""
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.max_header_bytes = max_header_bytes
        self.max_in_flight = max_in_flight
        self.in_flight = 0
        self.hot = tuple(hot)
        self._timers: dict[tuple[str, str, int], Any] = {}  # one label lookup each

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        began = time.perf_counter()
        headers = dict(scope["headers"])
        rid = headers.get(b"x-request-id", b"").decode("latin-1")[:64] or uuid.uuid4().hex
        token = request_id.set(rid)
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", []), (b"x-request-id", rid.encode())]
            await send(message)

        self.in_flight += 1
        try:
            refusal = (
                self._too_busy()
                or self._headers_too_large(scope)
                or self._too_large(headers)
                or _unusable_target(scope)
                or await _over_global_limit(scope)
            )
            limited = _limited(receive, self.max_body_bytes)
            if refusal is not None:
                await refusal(scope, receive, send_with_id)
            elif (hot := self._hot(scope)) is not None:
                hot_route, match = hot
                scope["route"] = hot_route
                answered = await hot_route.handler(scope, limited, send_with_id, *match.groups())
                if answered is False:  # the handler leaves this one to the app's route
                    await self.app(scope, limited, send_with_id)
            else:
                await self.app(scope, limited, send_with_id)
        finally:
            self.in_flight -= 1
            seconds = time.perf_counter() - began
            route = scope.get("route")
            template = getattr(route, "path", "unmatched")
            timer = self._timers.get((scope["method"], template, status))
            if timer is None:
                timer = self._timers[(scope["method"], template, status)] = REQUEST_SECONDS.labels(
                    scope["method"], template, str(status)
                )
            timer.observe(seconds)
            if access_log.isEnabledFor(logging.INFO):
                access_log.info(
                    "request",
                    extra={
                        "method": scope["method"],
                        "path": scope["path"],
                        "route": template,
                        "status": status,
                        "duration_ms": round(seconds * 1000, 2),
                        "client": (scope.get("client") or ("-",))[0],
                    },
                )
            request_id.reset(token)

    def _hot(self, scope: Scope) -> tuple[HotRoute, re.Match[str]] | None:
        for route in self.hot:
            if scope["method"] == route.method and (match := route.pattern.match(scope["path"])):
                return route, match
        return None

    def _too_busy(self) -> Any:
        if self.in_flight > self.max_in_flight:
            return ApiError(
                "overloaded", "this worker serves as many requests as it can"
            ).response()
        return None

    def _headers_too_large(self, scope: Scope) -> Any:
        size = sum(len(name) + len(value) for name, value in scope["headers"])
        if size > self.max_header_bytes:
            return ApiError(
                "headers_too_large", f"at most {self.max_header_bytes} bytes"
            ).response()
        return None

    def _too_large(self, headers: dict[bytes, bytes]) -> Any:
        length = headers.get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.max_body_bytes):
            return ApiError("body_too_large", f"at most {self.max_body_bytes} bytes").response()
        return None


_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def _unusable_target(scope: Scope) -> Any:
    """A control character (a NUL above all) in the path or the query names
    nothing onsale has, and Postgres refuses NUL in text: such a request is
    refused here, before any route reads an id from it."""
    if _CONTROL.search(scope["path"]):
        return ApiError("not_found", "no such resource").response()
    query = scope.get("query_string", b"")
    if b"%00" in query or _CONTROL.search(query.decode("latin-1")):
        return ApiError("invalid_request", "the query string has a control character").response()
    return None


UNLIMITED_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})  # probes and scrapers


async def _over_global_limit(scope: Scope) -> Any:
    """The per-address limit every route shares (429 before any work is done)."""
    limiter = getattr(scope["app"].state, "limiter", None)
    if limiter is None or scope["path"] in UNLIMITED_PATHS:
        return None
    try:
        await limiter.hit("global", (scope.get("client") or ("-",))[0])
    except ApiError as exc:
        return exc.response()
    return None


def _limited(receive: Receive, max_bytes: int) -> Receive:
    """Counts a body sent without Content-Length (chunked) as it arrives."""
    seen = 0

    async def wrapped() -> Message:
        nonlocal seen
        message = await receive()
        if message["type"] == "http.request":
            seen += len(message.get("body", b""))
            if seen > max_bytes:  # HTTPException: FastAPI's body reader lets it through
                raise StarletteHTTPException(413, f"at most {max_bytes} bytes")
        return message

    return wrapped
