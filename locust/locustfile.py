"""On-sale load scenarios against a running onsale.

    ONSALE_RATE_LIMITS=off make up           # another terminal (plain `make up`
    make load SCENARIO=spike                 #   for SCENARIO=rate-limit)
    .venv/bin/locust --config locust/scenarios/spike.conf --host http://127.0.0.1:8000

Scenarios (``locust/scenarios/*.conf``): ramp, spike, soak, last-seat,
rate-limit. Each run creates and publishes an event of its own (as the admin
in ``<data dir>/admin-credentials.json``), then lets its crowd in: people who
register, browse, watch availability, hold (with an Idempotency-Key), order
and pay through Stripe test mode (localstripe under ``make up``), or give up
and release. When Locust quits, the scenario judges itself (error rate, p95,
no oversell in Postgres, paid orders consistent: ``onsale_load/verdict.py``),
writes its verdict next to the HTML report in ``locust/reports/`` and sets the
exit code (0 pass, 1 fail, 2 could not start). The scenario options
(``--scenario``, ``--accounts``, ``--seated``, ``--ga``, thresholds, where the
target's secrets are) are in ``onsale_load/options.py``; Locust's ``--help``
does not list them.
"""

from __future__ import annotations

from typing import Any

from locust import FastHttpUser, constant, events, task
from onsale_load import crowd, options, organizer, verdict

events.init_command_line_parser.add_listener(options.add_arguments)


class Crowd(FastHttpUser):
    """One person of the crowd; what they do depends on ``--scenario``."""

    wait_time = constant(0)  # people pace themselves (crowd.PACES)

    def on_start(self) -> None:
        self.person = crowd.person_for(self)

    @task
    def act(self) -> None:
        self.person.act()


@events.test_start.add_listener
def _open_doors(environment: Any, **_: Any) -> None:
    organizer.open_doors(environment)


@events.spawning_complete.add_listener
def _everyone_in(user_count: int, **_: Any) -> None:
    organizer.everyone_in(user_count)


@events.quitting.add_listener
def _judge(environment: Any, **_: Any) -> None:
    verdict.judge(environment)
