"""How the sale says no: one exception with a stable code.

Codes are those of the API's problem table (``api/errors.py``), which maps
them to HTTP in one place, as it does the engine's own errors. ``context``
carries what helps the caller (the first scan's time, the existing order).
"""

from __future__ import annotations

from typing import Any


class SaleRefused(Exception):
    def __init__(self, code: str, detail: str | None = None, **context: Any) -> None:
        super().__init__(detail or code)
        self.code = code
        self.detail = detail
        self.context = context
