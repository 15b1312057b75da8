"""The fan-out's bookkeeping, without sockets: merging change sets, gaps,
bounded queues, shared snapshots. (The same code over real sockets, Redis and
Ray is tests/test_live_stream.py.)"""

from __future__ import annotations

import asyncio
import json

import pytest
from redis.asyncio import Redis

from api.live import Delta, Feed, LiveHub, Viewer, ViewerTooSlow
from engine.model import SectionAvailability, Snapshot


def change_set(version: int, *changes: dict[str, object]) -> bytes:
    return json.dumps({"version": version, "changes": list(changes)}).encode()


def seat(seat_id: str, status: str) -> dict[str, object]:
    return {"seat": seat_id, "status": status}


class Snapshots:
    def __init__(self, version: int) -> None:
        self.version = version
        self.reads = 0

    async def __call__(self, event_id: str) -> Snapshot:
        self.reads += 1
        await asyncio.sleep(0.01)  # long enough for every caller to pile up
        counts = SectionAvailability("A", "seated", 10, 10, 0, 0)
        return Snapshot(self.version, "on_sale", 0, (counts,), {})


def feed_with(snapshots: Snapshots, **hub_options: int) -> Feed:
    return Feed(LiveHub(Redis(), snapshots, **hub_options), "ev1")


def delta(first: int, last: int) -> Delta:
    return Delta(first, last, f"{first}-{last}", b"")


def test_change_sets_heard_in_one_tick_go_out_as_one_delta_per_contiguous_run() -> None:
    feed = feed_with(Snapshots(0))
    floor = {"section": "F", "available": 1, "held": 0, "sold": 9}
    heard = [
        change_set(5, seat("A-1-1", "held")),
        change_set(6, seat("A-1-1", "sold"), floor),
        change_set(6, seat("A-1-1", "available")),  # heard twice: ignored
        change_set(9, seat("A-1-2", "held")),  # 7 and 8 never heard: a new run
    ]
    first, second = feed._merge(heard)
    assert (first.from_version, first.version) == (5, 6)
    assert json.loads(first.text)["changes"] == [
        seat("A-1-1", "sold"),  # the last status wins
        floor,
    ]
    assert (second.from_version, second.version) == (9, 9)
    assert first.frame.endswith(first.text.encode())  # one frame, the same bytes for all


async def test_a_viewer_behind_a_gap_gets_a_snapshot_instead_of_the_delta() -> None:
    feed = feed_with(Snapshots(10))
    viewer = Viewer(feed, limit=8)
    assert await viewer.next(1) is not None and viewer.version == 10
    viewer.offer(delta(11, 12))
    viewer.offer(delta(14, 15))  # 13 is missing
    assert viewer.needs_snapshot
    assert await viewer.next(1) is not None  # the snapshot comes first ...
    assert viewer.version >= 10


async def test_a_stalled_viewer_keeps_at_most_its_limit_and_is_dropped_after_overflowing() -> None:
    feed = feed_with(Snapshots(0), queue_limit=4, max_overflows=2)
    viewer = Viewer(feed, limit=4)
    await viewer.next(1)
    version = 0
    for _ in range(3):  # three overflows: two answered by a snapshot, the third drops it
        for _ in range(5):
            viewer.offer(delta(version + 1, version + 1))
            version += 1
            assert len(viewer.queue) <= 4
    assert viewer.overflows == 3 and viewer.dropped
    with pytest.raises(ViewerTooSlow):
        await viewer.next(1)


async def test_viewers_needing_a_snapshot_at_once_share_one_read() -> None:
    snapshots = Snapshots(3)
    feed = feed_with(snapshots)
    viewers = [Viewer(feed, limit=8) for _ in range(200)]
    texts = await asyncio.gather(*(v.next(1) for v in viewers))
    assert snapshots.reads == 1
    assert len(set(texts)) == 1 and json.loads(texts[0] or "")["type"] == "snapshot"


async def test_an_idle_viewer_is_told_to_ping() -> None:
    viewer = Viewer(feed_with(Snapshots(1)), limit=8)
    await viewer.next(1)
    assert await viewer.next(0.01) is None
