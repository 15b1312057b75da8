"""Property-based contract check: schemathesis generates requests from
/openapi.json for every operation and sends them to `onsale serve`.

No answer may be a 5xx, and every answer must match the schema the API
publishes (status codes, content types, bodies). Bounded in examples per
operation so the suite stays quick.
"""

from __future__ import annotations

import asyncio
import uuid

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from api.security import hash_password, issue_access_token
from persistence import accounts
from persistence.db import create_engine
from tests.api_support import GENERAL, PASSWORD, SEATED, unique_email
from tests.conftest import LiveApi

pytestmark = pytest.mark.slow


@pytest.fixture(scope="session")
def api_schema(live_api: LiveApi) -> schemathesis.BaseSchema:
    return schemathesis.openapi.from_url(f"{live_api.base_url}/openapi.json")


CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


async def _organizer_account(database_url: str) -> uuid.UUID:
    db = create_engine(database_url, pool_size=1)
    try:
        account = await accounts.create_user(
            db, unique_email("organizer"), hash_password(PASSWORD), "Organizer", "organizer"
        )
    finally:
        await db.dispose()
    return account.id


def _known_resources(
    live_api: LiveApi, database_url: str, customer: dict[str, str]
) -> dict[str, str]:
    """An event on sale (owned by an organizer), and a hold and an order of the
    customer schemathesis acts as: random ids alone would only ever meet 404s."""
    organizer_id = asyncio.run(_organizer_account(database_url))
    organizer = {
        "Authorization": "Bearer "
        + issue_access_token(live_api.jwt_secret, organizer_id, "organizer", 3600)
    }
    with httpx.Client(base_url=live_api.base_url, timeout=30) as http:
        event = http.post(
            "/events",
            json={"name": "Fuzzed", "venue": "Hall", "starts_at": "2027-06-01T20:00:00Z",
                  "currency": "EUR"},
            headers=organizer,
        ).json()  # fmt: skip
        for section in (SEATED, GENERAL):
            http.post(f"/events/{event['id']}/sections", json=section, headers=organizer)
        assert http.post(f"/events/{event['id']}/publish", headers=organizer).status_code == 200
        hold = http.post(
            f"/events/{event['id']}/holds", json={"seats": ["A-1-1"]}, headers=customer
        ).json()
        order = http.post("/orders", json={"hold_id": hold["hold_id"]}, headers=customer).json()
    return {"event_id": event["id"], "hold_id": hold["hold_id"], "order_id": order["order_id"]}


def test_no_server_errors_and_every_answer_matches_the_schema(
    api_schema: schemathesis.BaseSchema, live_api: LiveApi, database_url: str
) -> None:
    token = issue_access_token(live_api.jwt_secret, uuid.uuid4(), "customer", 3600)
    headers = {"Authorization": f"Bearer {token}"}
    known = _known_resources(live_api, database_url, headers)
    failures: list[str] = []
    operations = [result.ok() for result in api_schema.get_all_operations()]
    assert len(operations) >= 25  # the whole contract, not a stub of it

    for operation in operations:

        @given(case=operation.as_strategy(), use_known=st.booleans())
        @settings(
            max_examples=12,
            deadline=None,
            derandomize=True,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        def exercise(case: schemathesis.Case, use_known: bool) -> None:
            if use_known:  # half the cases reach a real event, hold or order
                for name, value in known.items():
                    if name in (case.path_parameters or {}):
                        case.path_parameters[name] = value
            case.call_and_validate(base_url=live_api.base_url, headers=headers, checks=CHECKS)

        try:
            exercise()
        except Exception as exc:  # collect every operation's failure, then report all
            failures.append(f"{operation.label}: {str(exc)[:1500]}")
    assert not failures, "\n\n".join(failures)
