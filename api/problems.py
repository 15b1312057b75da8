"""problem+json responses: every 4xx/5xx body onsale sends has this shape."""

from __future__ import annotations

from typing import Any

from fastapi.responses import JSONResponse


def problem(
    status: int,
    code: str,
    title: str,
    detail: str | None = None,
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> JSONResponse:
    body = {
        "type": f"https://onsale.dev/problems/{code}",
        "title": title,
        "status": status,
        "detail": detail or title,
        "code": code,
        **extra,
    }
    return JSONResponse(
        body, status_code=status, headers=headers, media_type="application/problem+json"
    )
