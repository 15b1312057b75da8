"""Each scenario's pass criteria, judged when Locust quits.

Figures come from Locust's statistics (rates and percentiles of the crowd's
API requests; the error rate of every request sent, Stripe's included; the
``FLOW`` pseudo-requests are reported, not judged), outcomes from the
tally, and the oversell check from Postgres (``pgcheck``, in a process of its
own). The verdict is logged, written as JSON to ``--verdict-file`` and set as
Locust's exit code: 0 pass, 1 a criterion failed, 2 the run never started.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from locust.env import Environment
from locust.stats import StatsEntry

from onsale_load import organizer
from onsale_load.tally import TALLY

log = logging.getLogger("onsale.load")
PGCHECK = Path(__file__).with_name("pgcheck.py")


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str


def judge(environment: Environment) -> None:
    """``quitting``: judges the run and sets the process exit code."""
    run = organizer.RUN
    options: Any = environment.parsed_options
    if run is None:
        environment.process_exit_code = environment.process_exit_code or 2
        error = f"the run never started: {organizer.SETUP_ERROR}"
        _write(
            options.verdict_file, {"scenario": options.scenario, "passed": False, "error": error}
        )
        return
    figures = _figures(environment)
    oversell = _postgres(environment, run)
    checks = _common(options, figures) + _scenario_checks(options, figures, oversell)
    passed = all(c.ok for c in checks)
    environment.process_exit_code = 0 if passed else 1
    log.info("verdict for %s on event %s:", run.scenario, run.event_id)
    for c in checks:
        log.info("  %s  %-42s %s", "PASS" if c.ok else "FAIL", c.name, c.detail)
    log.info("figures: %s", json.dumps(figures))
    _write(options.verdict_file, {
        "scenario": run.scenario, "event_id": run.event_id, "passed": passed,
        "checks": [asdict(c) for c in checks], "figures": figures,
        "tally": dict(TALLY.counts), "accepted_before_429": TALLY.accepted_before_429,
        "postgres": oversell,
    })  # fmt: skip


def _figures(environment: Environment) -> dict[str, Any]:
    stats = environment.stats
    api = StatsEntry(stats, "API", "")  # the crowd's requests to the API
    sent = StatsEntry(stats, "sent", "")  # every real request: API, Stripe, pre-sale
    holds = StatsEntry(stats, "holds", "POST")
    checkouts = StatsEntry(stats, "checkouts", "POST")
    for entry in stats.entries.values():
        if entry.method != "FLOW":
            sent.extend(entry)
        if entry.name.startswith("/"):
            api.extend(entry)
        if entry.method == "POST" and entry.name in ("/events/{id}/holds", "/bench/pg-holds"):
            holds.extend(entry)
        if entry.method == "POST" and entry.name == "/orders":
            checkouts.extend(entry)
    last = api.last_request_timestamp
    seconds = max(last - api.start_time, 1e-9) if last is not None else 0.0
    return {
        "users": TALLY["peak_users"],
        "requests": api.num_requests,
        "sent": sent.num_requests,
        "failures": sent.num_failures,
        "error_rate": round(sent.fail_ratio, 5),
        "requests_per_s": round(api.num_requests / seconds, 1) if seconds else 0.0,
        "p50_ms": api.get_response_time_percentile(0.5) if api.num_requests else None,
        "p95_ms": api.get_response_time_percentile(0.95) if api.num_requests else None,
        "p99_ms": api.get_response_time_percentile(0.99) if api.num_requests else None,
        "holds": holds.num_requests,
        "holds_per_s": round(holds.num_requests / seconds, 1) if seconds else 0.0,
        "hold_p95_ms": holds.get_response_time_percentile(0.95) if holds.num_requests else None,
        "holds_ok": TALLY["holds_ok"],
        "checkout_p95_ms": checkouts.get_response_time_percentile(0.95)
        if checkouts.num_requests
        else None,
        "answers_5xx": TALLY["answers_5xx"],
        "payments_succeeded": TALLY["payments_succeeded"],
    }


def _postgres(environment: Environment, run: organizer.Run) -> dict[str, Any]:
    options: Any = environment.parsed_options
    args = [sys.executable, str(PGCHECK), "--database-url", run.target.database_url,
            "--event", run.event_id, "--settle-s", str(options.settle_s)]  # fmt: skip
    if options.baseline_holds:
        baseline = run.target.baseline or {}
        args += ["--baseline-run", baseline["run"],
                 "--baseline-capacity", str(baseline.get("stock", run.ga_capacity))]  # fmt: skip
    else:  # the orders paid in Stripe go in on stdin
        args += ["--api", environment.host or "", "--paid-orders", "-"]
    done = subprocess.run(
        args,
        input=json.dumps(TALLY.paid_orders),
        capture_output=True,
        text=True,
        timeout=options.settle_s + 60,
    )
    try:
        return dict(json.loads(done.stdout.strip().splitlines()[-1]))
    except (ValueError, IndexError):
        return {"ok": False, "error": (done.stderr or done.stdout)[-2000:]}


def _common(options: Any, figures: dict[str, Any]) -> list[Check]:
    p95, hold_p95 = figures["p95_ms"] or 0, figures["hold_p95_ms"] or 0
    return [
        Check("error rate", figures["error_rate"] <= options.max_error_rate,
              f"{figures['failures']} failed of {figures['sent']} sent "
              f"({figures['error_rate']:.2%}, max {options.max_error_rate:.2%})"),
        Check("p95 of API requests", p95 <= options.p95_ms,
              f"{p95:.0f} ms (max {options.p95_ms:.0f})"),
        Check("p95 of holds", hold_p95 <= options.hold_p95_ms,
              f"{hold_p95:.0f} ms (max {options.hold_p95_ms:.0f})"),
        Check("no 429 outside the rate-limit probe", TALLY["unexpected_429"] == 0,
              f"{TALLY['unexpected_429']} (server must run with ONSALE_RATE_LIMITS=off)"),
        Check("no answer of 500 or above", TALLY["answers_5xx"] == 0,
              f"{TALLY['answers_5xx']}"),
        *(
            [Check("p95 of checkouts", (figures["checkout_p95_ms"] or 0) <= options.checkout_p95_ms,
                   f"{figures['checkout_p95_ms'] or 0:.0f} ms (max {options.checkout_p95_ms:.0f})")]
            if options.checkout_p95_ms else []
        ),
    ]  # fmt: skip


def _scenario_checks(options: Any, figures: dict[str, Any], pg: dict[str, Any]) -> list[Check]:
    if options.baseline_holds:
        return [
            Check("baseline: no oversell in Postgres", bool(pg.get("ok")),
                  f"held {pg.get('held')} of {pg.get('capacity')}, stock left {pg.get('stock')}"),
            Check("some holds succeeded", TALLY["holds_ok"] > 0, f"{TALLY['holds_ok']}"),
        ]  # fmt: skip
    checks = _oversell_checks(pg)
    if options.scenario == "rate-limit":
        return checks + _rate_limit_checks(options)
    if options.scenario == "last-seat":
        paid = pg.get("orders", {}).get("paid", 0)
        tickets = sum(s["valid"] for s in pg.get("sections", []))
        return [
            *checks,
            Check("exactly one hold won the seat", TALLY["race_won"] == 1,
                  f"{TALLY['race_won']} of {TALLY['race_attempts']} attempts"),
            Check("every loser was told seats_unavailable",
                  TALLY["seats_unavailable"] == TALLY["race_attempts"] - TALLY["race_won"],
                  f"{TALLY['seats_unavailable']} refusals"),
            Check("one paid order, one ticket", paid == 1 and tickets == 1,
                  f"{paid} paid, {tickets} valid tickets"),
        ]  # fmt: skip
    checks.append(Check("some holds succeeded", TALLY["holds_ok"] > 0, f"{TALLY['holds_ok']}"))
    if options.journey == "full":
        checks.append(Check(
            "some orders were paid", TALLY["payments_succeeded"] > 0,
            f"{TALLY['payments_succeeded']} paid ({TALLY['orders_paid_seen']} seen paid by "
            f"their buyer), {TALLY['holds_released']} released"))  # fmt: skip
    return checks


def _oversell_checks(pg: dict[str, Any]) -> list[Check]:
    if "sections" not in pg:
        return [Check("Postgres check ran", False, str(pg.get("error", pg))[:300])]
    paid = pg["orders"].get("paid", 0)
    sent = TALLY["payments_confirm_sent"]
    return [
        Check("no seat sold twice (Postgres)", not pg["seats_sold_twice"],
              f"{len(pg['seats_sold_twice'])} seats"),
        Check("no section over capacity (Postgres)", not pg["over_capacity"],
              ", ".join(f"{s['code']} {s['valid']}/{s['capacity']}" for s in pg["sections"])),
        Check("sections' sold counters = valid tickets", not pg["sold_counter_off"],
              str(pg["sold_counter_off"] or "all equal")),
        Check("paid orders hold their tickets, others none", not pg["orders_wrong_tickets"],
              str(pg["orders_wrong_tickets"][:3] or "all consistent")),
        Check("every paid order's payment succeeded", not pg["paid_without_payment"],
              f"{pg['paid_without_payment']} without"),
        Check("every order paid in Stripe is paid here", not pg["paid_in_stripe_not_here"],
              f"{len(TALLY.paid_orders)} paid; not in Postgres after {pg['settle_s']} s: "
              f"{pg['paid_in_stripe_not_here'][:3] or 'none'}"),
        Check("live sold counts = Postgres tickets", not pg.get("live_vs_postgres"),
              f"off in {pg.get('live_vs_postgres') or 'no section'}: live {pg.get('live_sold')}"),
        Check("no paid order nobody paid for", paid <= sent,
              f"{paid} paid in Postgres; {sent} confirms sent"),
    ]  # fmt: skip


def _rate_limit_checks(options: Any) -> list[Check]:
    before = TALLY.accepted_before_429
    return [
        Check("holds limit answered 429", TALLY["429_holds"] > 0, f"{TALLY['429_holds']} times"),
        Check("global limit answered 429", TALLY["429_global"] > 0,
              f"{TALLY['429_global']} times"),
        Check("every 429 is rate_limited with Retry-After", TALLY["malformed_429"] == 0,
              f"{TALLY['malformed_429']} malformed"),
        Check("no more holds than the limit before 429",
              all(n <= options.holds_limit for n in before["holds"]),
              f"{before['holds']} (limit {options.holds_limit}/min)"),
        Check("no more requests than the limit before 429",
              all(n <= options.global_limit for n in before["global"]),
              f"{before['global']} (limit {options.global_limit}/min)"),
        Check("Retry-After is honest", TALLY["retry_after_honoured"] > 0
              and TALLY["retry_after_too_short"] == 0,
              f"{TALLY['retry_after_honoured']} let through after waiting, "
              f"{TALLY['retry_after_too_short']} refused again"),
    ]  # fmt: skip


def _write(path: str, verdict: dict[str, Any]) -> None:
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(json.dumps(verdict, indent=2, default=str))
