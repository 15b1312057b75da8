"""docs/API.md is the contract: these tests fail when it drifts from the app.

The app is built, never started (no lifespan: nothing connects), and its
OpenAPI document is compared with API.md's route tables and error-code table,
and with the committed docs/openapi.json. No servers; well under a second
once the app's modules are imported.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from starlette.routing import Match

from api.app import create_app, openapi_document
from api.errors import PROBLEMS
from api.settings import Settings

DOCS = Path(__file__).resolve().parent.parent / "docs"
API_MD = DOCS / "API.md"
OPENAPI_JSON = DOCS / "openapi.json"

HTTP_METHODS = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"})
# Routes API.md documents that the OpenAPI document leaves out
# (include_in_schema=False): their statuses are not checked, only that they are served.
UNLISTED = frozenset({("GET", "/events/{event_id}/live")})
# Sent by api/routers/health.py itself, not through the PROBLEMS table.
OUTSIDE_PROBLEMS = {"not_ready": 503}

EDIT_DOC = "edit docs/API.md to match the app (or the app to match the contract)"
REGENERATE = "regenerate it with `make openapi` (.venv/bin/onsale openapi > docs/openapi.json)"


def _cells(line: str) -> list[str]:
    """A Markdown table row's cells; ``\\|`` inside a cell is not a column break."""
    parts = re.split(r"(?<!\\)\|", line.strip())
    return [cell.strip() for cell in parts[1:-1]]


def _plain(cell: str) -> str:
    return cell.strip().strip("`").strip()


def documented_routes(text: str) -> dict[tuple[str, str], list[int]]:
    """(method, path) -> statuses of every route-table row:
    ``| METHOD | /path | who | body → result | statuses |``."""
    routes: dict[tuple[str, str], list[int]] = {}
    for number, line in enumerate(text.splitlines(), 1):
        if not line.lstrip().startswith("|"):
            continue
        cells = _cells(line)
        if len(cells) != 5 or cells[0] not in HTTP_METHODS:
            continue
        key = (cells[0], _plain(cells[1]))
        assert key not in routes, f"docs/API.md:{number}: {key} is documented twice"
        try:
            routes[key] = [int(s) for s in cells[4].split(",")]
        except ValueError:
            pytest.fail(f"docs/API.md:{number}: statuses must be numbers: {cells[4]!r}")
    return routes


def documented_error_codes(text: str) -> dict[str, int]:
    """The ``| code | status | meaning |`` table under the "Error codes" heading."""
    section = re.search(r"^#+ Error codes\n(.*?)(?=^#+ |\Z)", text, re.M | re.S)
    assert section, "docs/API.md has no 'Error codes' section"
    codes: dict[str, int] = {}
    for line in section.group(1).splitlines():
        cells = _cells(line) if line.lstrip().startswith("|") else []
        if len(cells) != 3 or not cells[1].isdigit():
            continue  # not a row, or the header or separator row
        code = _plain(cells[0])
        assert code not in codes, f"error code {code} is listed twice in docs/API.md"
        codes[code] = int(cells[1])
    return codes


@pytest.fixture(scope="module")
def app() -> Any:
    # The URLs are required but never dialled: the lifespan does not run.
    return create_app(
        Settings(redis_url="redis://127.0.0.1:1/0", database_url="postgresql://x@127.0.0.1:1/x")
    )


@pytest.fixture(scope="module")
def schema(app: Any) -> dict[str, Any]:
    return dict(app.openapi())


@pytest.fixture(scope="module")
def operations(schema: dict[str, Any]) -> dict[tuple[str, str], list[int]]:
    return {
        (method.upper(), path): sorted(int(code) for code in operation["responses"])
        for path, methods in schema["paths"].items()
        for method, operation in methods.items()
    }


@pytest.fixture(scope="module")
def api_md() -> str:
    return API_MD.read_text(encoding="utf-8")


def _served(app: Any, kind: str, method: str, path: str) -> bool:
    concrete = re.sub(r"\{[^}]+\}", "x", path)
    scope = {"type": kind, "method": method, "path": concrete, "root_path": "", "headers": []}
    return any(route.matches(scope)[0] is Match.FULL for route in app.router.routes)


def test_route_tables_list_exactly_the_operations_the_app_serves(
    api_md: str, operations: dict[tuple[str, str], list[int]], app: Any
) -> None:
    documented = set(documented_routes(api_md)) - UNLISTED
    missing = sorted(set(operations) - documented)
    unknown = sorted(documented - set(operations))
    assert not missing and not unknown, (
        f"docs/API.md route tables differ from the app's OpenAPI document; {EDIT_DOC}.\n"
        f"  served but not documented: {missing}\n"
        f"  documented but not served: {unknown}"
    )
    for method, path in UNLISTED:
        assert (method, path) in documented_routes(api_md), f"{path}: drop it from UNLISTED"
        assert (method, path) not in operations, f"{method} {path} is in the schema now"
        assert _served(app, "http", method, path), f"{method} {path} is no longer served"


def test_each_route_row_lists_the_statuses_its_operation_declares(
    api_md: str, operations: dict[tuple[str, str], list[int]]
) -> None:
    wrong = [
        f"  {method} {path}: API.md says {', '.join(map(str, listed))}; "
        f"the app declares {', '.join(map(str, operations[(method, path)]))}"
        for (method, path), listed in documented_routes(api_md).items()
        if (method, path) in operations and listed != operations[(method, path)]
    ]
    assert not wrong, f"statuses differ (ascending, comma-separated); {EDIT_DOC}:\n" + "\n".join(
        wrong
    )


def test_error_code_table_is_the_problems_table(api_md: str) -> None:
    expected = {code: status for code, (status, _) in PROBLEMS.items()} | OUTSIDE_PROBLEMS
    documented = documented_error_codes(api_md)
    missing = {c: s for c, s in expected.items() if c not in documented}
    unknown = {c: s for c, s in documented.items() if c not in expected}
    wrong = {c: (s, expected[c]) for c, s in documented.items() if expected.get(c, s) != s}
    assert not (missing or unknown or wrong), (
        f"docs/API.md's error codes differ from api/errors.py PROBLEMS; {EDIT_DOC}.\n"
        f"  missing: {missing}\n  not in PROBLEMS: {unknown}\n"
        f"  wrong status (documented, actual): {wrong}"
    )


def test_the_websocket_stream_api_md_describes_is_served(api_md: str, app: Any) -> None:
    assert "WS /ws/events/{event_id}" in api_md
    assert _served(app, "websocket", "GET", "/ws/events/{event_id}")


FASTAPIS_OWN = frozenset({"HTTPValidationError", "ValidationError"})


def _contract(schema: dict[str, Any]) -> dict[str, Any]:
    """What a schema says, in words any FastAPI and pydantic use alike: each
    operation's id, parameters and statuses, and each model's fields."""
    operations = {
        f"{method.upper()} {path}": (
            op.get("operationId"),
            sorted(p["name"] for p in op.get("parameters", [])),
            sorted(op["responses"]),
        )
        for path, methods in schema["paths"].items()
        for method, op in methods.items()
    }
    models = {
        name: (sorted(model.get("properties", {})), sorted(model.get("required", [])),
               model.get("enum"))
        for name, model in schema["components"]["schemas"].items()
        if name not in FASTAPIS_OWN  # FastAPI's default 422 body, which onsale never sends
    }  # fmt: skip
    return {"operations": operations, "models": models}


def test_committed_openapi_json_is_the_apps_schema() -> None:
    current = openapi_document()
    committed = OPENAPI_JSON.read_text(encoding="utf-8") if OPENAPI_JSON.exists() else "{}"
    written_with = json.loads(committed).get("info", {}).get("x-generated-with")
    if written_with == json.loads(current)["info"]["x-generated-with"]:
        assert committed == current, f"docs/openapi.json is not the app's schema: {REGENERATE}"
    else:  # other library versions (the minimum-versions venv) word it otherwise
        assert _contract(json.loads(committed)) == _contract(json.loads(current)), (
            f"docs/openapi.json says another contract than the app: {REGENERATE}"
        )
