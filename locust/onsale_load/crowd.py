"""Who is in each scenario's crowd, and what they do.

``Buyer`` (ramp, spike, soak): browses, watches availability, holds, then
orders and pays or gives up; ``LastSeatBuyer``: one try at the one seat, at
the same moment as everyone else; ``HoldsProbe`` and ``BrowseProbe``
(rate-limit): push until refused with 429, wait as told, try again.
"""

from __future__ import annotations

import uuid
from typing import Any

import gevent
from locust import FastHttpUser

from onsale_load import organizer
from onsale_load.organizer import GENERAL, SEATED
from onsale_load.person import TURNED_AWAY, Answer, Person
from onsale_load.tally import TALLY


class Buyer(Person):
    """Browses, watches availability, holds seats or GA places, then orders
    and pays, or gives up and releases; again after a pause (ramp, spike, soak).
    ``--journey hold``: browses and holds one GA place, as ``onsale bench http``
    does, and never checks out."""

    sold_out = False  # hold journey: told sold_out once, only watches from then on

    def act(self) -> None:
        if not self.signed_in():
            return
        self.browse()
        sections = self.availability()
        if sections is None:
            self.pause(self.pace.between_s)
            return
        if self.options.journey == "hold" or self.options.baseline_holds:
            self.hold_one()
            return
        open_sections = [s for s in sections if s["available"] > 0]
        if not open_sections:
            TALLY.add("watched_sold_out")
            self.pause(self.pace.watch_s)
            return
        if not any(s["kind"] == "seated" for s in open_sections) and self.run.rows:
            self.seat_map()  # a look at the hall even when only standing places are left
        self.pause(self.pace.step_s)
        hold = self.try_hold(open_sections)
        if hold is not None:
            self.pause(self.pace.step_s)
            if self.rng.random() < self.options.release_rate:
                self.release(hold)
            else:
                self.checkout(hold)
        self.pause(self.pace.between_s)

    def browse(self) -> None:
        """The event page: the list once, then the event, as a buyer who
        followed a link to the sale; the seat map comes with the choice."""
        if self.rng.random() < 0.5:
            self.call("GET", "/events?page=1&size=20", name="/events")
        self.call("GET", f"/events/{self.run.event_id}", name="/events/{id}")

    def hold_one(self) -> None:
        if self.sold_out:
            TALLY.add("watched_sold_out")
            self.pause(self.pace.watch_s)
            return
        self.pause(self.pace.step_s)
        answer = self.hold({"section": GENERAL, "quantity": 1})
        self.sold_out = answer.code == "sold_out"
        self.pause(self.pace.between_s)

    def try_hold(self, open_sections: list[dict[str, Any]]) -> dict[str, Any] | None:
        """Up to three tries: someone else taking the chosen seats is the
        normal case in a spike; picks again from a fresh seat map."""
        for _ in range(3):
            section = self.rng.choice(open_sections)
            body = self.choose(section)
            if body is None:
                return None
            answer = self.hold(body)
            if answer.ok:
                return dict(answer.body)
            if answer.code != "seats_unavailable":
                return None
            self.pause(self.pace.step_s)
        return None

    def choose(self, section: dict[str, Any]) -> dict[str, Any] | None:
        wanted = self.rng.randint(1, 4)
        if section["kind"] == "general":
            return {"section": section["code"], "quantity": min(wanted, section["available"])}
        seats = self.call(
            "GET",
            f"/events/{self.run.event_id}/seats?section={section['code']}",
            name="/events/{id}/seats",
        )
        if not seats.ok:
            return None
        free = [s["id"] for s in seats.body["seats"] if s["status"] == "available"]
        if not free:
            return None
        return {"seats": self.rng.sample(free, min(wanted, len(free)))}

    def seat_map(self) -> None:
        self.call("GET", f"/events/{self.run.event_id}/seats", name="/events/{id}/seats")

    def release(self, hold: dict[str, Any]) -> None:
        answer = self.call("DELETE", f"/holds/{hold['hold_id']}", name="/holds/{id}")
        if answer.ok:
            TALLY.add("holds_released")


class LastSeatBuyer(Person):
    """Waits at the gate until the whole crowd is in, tries the one seat at
    the same moment as everyone else; the winner buys it, the others watch."""

    tried = False

    def act(self) -> None:
        if not self.signed_in():
            return
        if self.tried:
            self.availability()
            self.pause(self.pace.watch_s)
            return
        self.tried = True
        self.run.gate.wait(timeout=60)
        TALLY.add("race_attempts")
        answer = self.hold({"seats": [f"{SEATED}-1-1"]})
        if answer.ok:
            TALLY.add("race_won")
            self.checkout(dict(answer.body))


class Prober(Person):
    """Sends one request after another until refused with 429, checks the
    refusal, waits as long as Retry-After says, and checks the next request
    is let through. ``limit`` names the limit it probes."""

    limit = ""
    accepted = 0
    refused_once = False
    waited = False

    def probe(self) -> Answer:
        raise NotImplementedError

    def act(self) -> None:
        if not self.signed_in():
            return
        answer = self.probe()
        if answer.status == 429:
            detail = str(answer.body.get("detail", "")) if isinstance(answer.body, dict) else ""
            which = "holds" if "for holds" in detail else "global"
            TALLY.add(f"429_{which}")
            if not self.refused_once:
                self.refused_once = True
                TALLY.accepted_before_429[which].append(self.accepted)
            self.waited = True
            gevent.sleep(int(answer.retry_after or "1") + 0.5)
            return
        if self.waited:
            TALLY.add("retry_after_honoured" if answer.ok else "retry_after_too_short")
            self.waited = False
        if answer.ok:
            self.accepted += 1
        self.pause(self.pace.step_s)


class HoldsProbe(Prober):
    limit = "holds"

    def probe(self) -> Answer:
        path = f"/events/{self.run.event_id}/holds"
        answer = self.call(
            "POST",
            path,
            name="/events/{id}/holds",
            json={"section": GENERAL, "quantity": 1},
            key=uuid.uuid4().hex,
            expected=TURNED_AWAY | {"rate_limited"},
        )
        if answer.ok:
            TALLY.add("holds_ok")
            self.call("DELETE", f"/holds/{answer.body['hold_id']}", name="/holds/{id}")
        return answer


class BrowseProbe(Prober):
    limit = "global"

    def probe(self) -> Answer:
        return self.call(
            "GET",
            f"/events/{self.run.event_id}/availability",
            name="/events/{id}/availability",
            expected=frozenset({"rate_limited"}),
        )


class Absent:
    """Stands in while a run that could not be prepared shuts down."""

    def act(self) -> None:
        gevent.sleep(1)


def person_for(user: FastHttpUser) -> Person | Absent:
    run = organizer.RUN
    if run is None:
        return Absent()
    if run.scenario == "last-seat":
        return LastSeatBuyer(user, run)
    if run.scenario == "rate-limit":
        return (HoldsProbe if TALLY["users_started"] % 2 == 0 else BrowseProbe)(user, run)
    return Buyer(user, run)
