"""Command-line options of the scenarios, and where a run finds its target.

Every option can also be set in a scenario's config file
(``locust/scenarios/*.conf``) or through the environment variable named in
its help. What is not given is read from the data directory ``make up``
writes (``ONSALE_DATA_DIR``, ``.onsale`` by default):

- the admin who organizes the run's event: ``admin-credentials.json``;
- the embedded Postgres: its port is line 4 of ``postgres/postmaster.pid``;
- localstripe: ``localstripe/localstripe.pid`` names the process, whose
  command line carries ``--port``. localstripe takes any ``sk_…`` key.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

SCENARIOS = ("ramp", "spike", "soak", "last-seat", "rate-limit")
LOCALSTRIPE_KEY = "sk_test_onsale_load"  # localstripe accepts any sk_ key
REAL_STRIPE = "https://api.stripe.com"


def add_arguments(parser: Any) -> None:
    """Listener of ``events.init_command_line_parser``."""

    def add(*names: str, env: str | None = None, **kwargs: Any) -> None:
        if env:
            kwargs["help"] = f"{kwargs.get('help', '')} [env {env}]".strip()
        parser.add_argument(*names, env_var=env, **kwargs)

    add("--scenario", env="ONSALE_SCENARIO", choices=SCENARIOS, default="spike",
        help="which crowd, event and pass criteria")  # fmt: skip
    add("--journey", choices=("full", "hold"), default="full",
        help="full: browse, hold, order, pay or release; "
             "hold: browse and hold 1 GA place")  # fmt: skip
    add("--baseline-holds", action="store_true", default=False,
        help="send holds to POST /bench/pg-holds (bench/http_server.py); "
             "implies --journey hold")  # fmt: skip
    add("--without-idempotency-key", action="store_true", default=False,
        help="hold without an Idempotency-Key, as `onsale bench http` does")  # fmt: skip
    add("--baseline-run", env="ONSALE_BENCH_BASELINE_RUN", default="",
        help="the bench_sections run /bench/pg-holds takes from (default: "
             "<data-dir>/bench-baseline.json, written by baseline_server.py)")  # fmt: skip
    add("--data-dir", env="ONSALE_DATA_DIR", default=".onsale",
        help="the server's data directory, where credentials and ports are found")  # fmt: skip
    add("--admin-email", env="ONSALE_LOAD_ADMIN_EMAIL", default="",
        help="organizer of the run's event (default: admin-credentials.json)")  # fmt: skip
    add("--admin-password", env="ONSALE_LOAD_ADMIN_PASSWORD", default="", include_in_web_ui=False)
    add("--database-url", env="ONSALE_DATABASE_URL", default="",
        help="Postgres for the oversell check (default: the data dir's embedded one)")  # fmt: skip
    add("--stripe-api-base", env="ONSALE_STRIPE_API_BASE", default="",
        help="Stripe API base (default: the data dir's localstripe, "
             "else api.stripe.com)")  # fmt: skip
    add("--stripe-key", env="STRIPE_SECRET_KEY", default="", include_in_web_ui=False,
        help="Stripe secret key (test mode); any sk_… for localstripe")  # fmt: skip
    add("--card", default="4242424242424242",
        help="card number to pay with, or a test payment method such as pm_card_visa")  # fmt: skip
    add("--accounts", type=int, default=0,
        help="0: every user registers on arrival; N: N accounts registered before the "
             "doors open, shared round-robin (registration is one argon2 hash each)")  # fmt: skip
    add("--signed-in", type=int, default=0,
        help="N buyers whose accounts exist and who logged in before the sale (tokens "
             "signed with the server's JWT secret); overrides --accounts")  # fmt: skip
    add("--jwt-secret", env="ONSALE_JWT_SECRET", default="", include_in_web_ui=False,
        help="the server's JWT secret (default: <data-dir>/jwt-secret)")  # fmt: skip
    add("--seated", default="20x25", help="ROWSxSEATS_PER_ROW of section A (0x0: none)")
    add("--ga", type=int, default=500, help="capacity of general-admission section GA (0: none)")
    add("--release-rate", type=float, default=0.25,
        help="share of holders who give up and release (DELETE /holds/{id})")  # fmt: skip
    add("--max-error-rate", type=float, default=0.01, help="pass: failed requests / requests")
    add("--p95-ms", type=float, default=2000.0, help="pass: p95 of all API requests")
    add("--hold-p95-ms", type=float, default=2000.0, help="pass: p95 of POST …/holds")
    add("--checkout-p95-ms", type=float, default=0.0,
        help="pass: p95 of POST /orders (0: not judged)")  # fmt: skip
    add("--settle-s", type=float, default=60.0,
        help="how long the check waits for the write-behind to reach Postgres")  # fmt: skip
    add("--holds-limit", type=int, default=20,
        help="rate-limit scenario: the server's holds limit per user per minute")  # fmt: skip
    add("--global-limit", type=int, default=300,
        help="rate-limit scenario: the server's global limit per address per minute")  # fmt: skip
    add("--verdict-file", default="", help="write the pass criteria and figures here (JSON)")


@dataclass(frozen=True)
class Target:
    """Everything a run needs besides the host, resolved once at test start."""

    admin_email: str
    admin_password: str
    database_url: str
    stripe_api_base: str
    stripe_key: str
    baseline: dict[str, Any] | None  # {run, stock}: with --baseline-holds
    jwt_secret: str = ""

    @classmethod
    def resolve(cls, options: Any) -> Target:
        data_dir = Path(options.data_dir)
        email, password = options.admin_email, options.admin_password
        if not (email and password):
            saved = data_dir / "admin-credentials.json"
            if not saved.exists():
                raise SetupError(
                    f"no admin: set ONSALE_LOAD_ADMIN_EMAIL/PASSWORD or point --data-dir at "
                    f"the server's data directory (no {saved})"
                )
            creds = json.loads(saved.read_text())
            email, password = creds["email"], creds["password"]
        stripe_base = options.stripe_api_base or _localstripe_url(data_dir) or REAL_STRIPE
        stripe_key = options.stripe_key or (LOCALSTRIPE_KEY if stripe_base != REAL_STRIPE else "")
        baseline = None
        if options.baseline_holds:
            saved = data_dir / "bench-baseline.json"  # written by baseline_server.py
            baseline = json.loads(saved.read_text()) if saved.exists() else {}
            baseline["run"] = options.baseline_run or baseline.get("run")
            if not baseline["run"]:
                raise SetupError(f"--baseline-holds: no --baseline-run and no {saved}")
        return cls(
            admin_email=email,
            admin_password=password,
            database_url=_asyncpg_dsn(options.database_url or _embedded_postgres_url(data_dir)),
            stripe_api_base=stripe_base.rstrip("/"),
            stripe_key=stripe_key,
            baseline=baseline,
            jwt_secret=options.jwt_secret or _saved_secret(data_dir / "jwt-secret"),
        )


class SetupError(RuntimeError):
    """The run cannot start: the message says what to set."""


def _embedded_postgres_url(data_dir: Path) -> str:
    pidfile = data_dir / "postgres" / "postmaster.pid"
    try:
        port = int(pidfile.read_text().splitlines()[3])
    except (OSError, IndexError, ValueError) as exc:
        raise SetupError(
            f"no Postgres URL: set ONSALE_DATABASE_URL or run `make up` ({pidfile}: {exc})"
        ) from exc
    return f"postgresql://postgres@127.0.0.1:{port}/postgres"


def _saved_secret(path: Path) -> str:
    try:
        return path.read_text().strip()
    except OSError:
        return ""


def _localstripe_url(data_dir: Path) -> str | None:
    try:
        pid = int((data_dir / "localstripe" / "localstripe.pid").read_text().split()[0])
        argv = psutil.Process(pid).cmdline()
        return f"http://127.0.0.1:{int(argv[argv.index('--port') + 1])}"
    except (OSError, ValueError, IndexError, psutil.Error):
        return None


def _asyncpg_dsn(url: str) -> str:
    return url.replace("postgresql+asyncpg://", "postgresql://")
