"""Live places in a waiting room, for the WebSocket ``/ws/events/{id}/queue``.

Each worker reads each watched room's state once a tick (one Redis call per
event and worker, however many people watch), and works every viewer's
place out from it: after the open nobody can join ahead of anyone (later
joins go to the back), so a viewer who had ``ahead`` people in front when
``admitted_total`` was A has ``ahead - (admitted_total' - A)`` in front now.
So the crowd costs arithmetic, not Redis calls; a viewer's own Redis call is
made once, when their turn has come (to fetch the admission), and every few
seconds before the open (when random places may still land ahead of them).
A viewer keeps only its latest position: a slow socket gets the newest
figure, never a backlog.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger(__name__)

Standing = Callable[[str], Awaitable[dict[str, Any]]]  # customer -> lua/queue.lua "me"
PRE_OPEN_REFRESH_S = 5.0


@dataclass(eq=False)
class QueueViewer:
    customer_id: str
    make_pass: Callable[[dict[str, Any]], dict[str, Any]]  # "me" -> the admitted message
    ahead: int | None = None
    admitted_at_base: int = 0
    status: str = "none"
    refreshed: float = 0.0
    latest: str | None = None
    final: bool = False
    ready: asyncio.Event = field(default_factory=asyncio.Event)

    def say(self, message: dict[str, Any], *, final: bool = False) -> None:
        if self.final:
            return
        self.latest = json.dumps(message, separators=(",", ":"))
        self.final = final
        self.ready.set()

    async def next(self, timeout_s: float) -> str | None:
        """The newest message, or None after ``timeout_s`` of nothing new."""
        try:
            await asyncio.wait_for(self.ready.wait(), timeout_s)
        except TimeoutError:
            return None
        self.ready.clear()
        text, self.latest = self.latest, None
        return text

    def rebase(self, me: dict[str, Any]) -> None:
        self.status = str(me["status"])
        self.ahead = None if me.get("ahead") is None else int(me["ahead"])
        self.admitted_at_base = int(me["admitted_total"])
        self.refreshed = time.monotonic()


class QueueWatcher:
    """One event's waiting room as this worker's viewers see it."""

    def __init__(
        self,
        event_id: str,
        read: Callable[[str, str, Any], Awaitable[dict[str, Any]]],
        tick_s: float,
    ) -> None:
        self.event_id = event_id
        self._read = read
        self.tick_s = tick_s
        self.viewers: set[QueueViewer] = set()
        self._task: asyncio.Task[None] | None = None

    async def me(self, customer_id: str) -> dict[str, Any]:
        return await self._read(self.event_id, "me", customer_id)

    async def add(self, viewer: QueueViewer) -> None:
        me = await self.me(viewer.customer_id)
        viewer.rebase(me)
        self._tell(viewer, me, me)
        self.viewers.add(viewer)
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run())

    def remove(self, viewer: QueueViewer) -> None:
        self.viewers.discard(viewer)

    async def _run(self) -> None:
        while self.viewers:
            try:
                state = await self._read(self.event_id, "state", None)
                for viewer in list(self.viewers):
                    await self._update(viewer, state)
            except Exception:  # Redis away: the next tick tries again
                log.exception("waiting room %s: tick failed", self.event_id)
            await asyncio.sleep(self.tick_s)

    async def _update(self, viewer: QueueViewer, state: dict[str, Any]) -> None:
        if viewer.final:
            return
        if viewer.status != "waiting" or viewer.ahead is None:
            if time.monotonic() - viewer.refreshed > PRE_OPEN_REFRESH_S:  # joined elsewhere?
                me = await self.me(viewer.customer_id)
                viewer.rebase(me)
                self._tell(viewer, me, state)
            return
        served = int(state["admitted_total"]) - viewer.admitted_at_base
        before_open = state["state"] == "pre_queue"
        stale = time.monotonic() - viewer.refreshed > PRE_OPEN_REFRESH_S
        if served > viewer.ahead or (before_open and stale):
            me = await self.me(viewer.customer_id)  # their turn came, or places moved
            viewer.rebase(me)
            self._tell(viewer, me, state)
            return
        ahead = viewer.ahead - served
        viewer.say(_position(ahead, state))

    def _tell(self, viewer: QueueViewer, me: dict[str, Any], state: dict[str, Any]) -> None:
        if me["status"] == "admitted":
            viewer.say(viewer.make_pass(me), final=True)
        elif me["status"] == "waiting":
            viewer.say(_position(int(me["ahead"]), state))
        else:
            viewer.say({"type": "position", "status": me["status"], "state": state["state"]})


def _position(ahead: int, state: dict[str, Any]) -> dict[str, Any]:
    rate = float(state.get("rate") or 0)
    until_open = max(0.0, (int(state.get("opens_at") or 0) - int(state["now"])) / 1000)
    eta = round(until_open + (ahead + 1) * 60 / rate, 1) if rate > 0 else None
    return {
        "type": "position",
        "status": "waiting",
        "ahead": ahead,
        "eta_s": eta,
        "state": state["state"],
        "waiting": state.get("waiting"),
    }


class QueueWatch:
    """Every watched waiting room of this worker."""

    def __init__(
        self, read: Callable[[str, str, Any], Awaitable[dict[str, Any]]], tick_s: float = 0.5
    ) -> None:
        self._read = read
        self.tick_s = tick_s
        self.rooms: dict[str, QueueWatcher] = {}

    @contextlib.asynccontextmanager
    async def watch(self, event_id: str, viewer: QueueViewer) -> AsyncIterator[QueueViewer]:
        room = self.rooms.get(event_id)
        if room is None:
            room = self.rooms[event_id] = QueueWatcher(event_id, self._read, self.tick_s)
        await room.add(viewer)
        try:
            yield viewer
        finally:
            room.remove(viewer)
            if not room.viewers:
                self.rooms.pop(event_id, None)
