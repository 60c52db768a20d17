"""EventWriter: the bounded queue in front of the store (overflow counted and logged, never
blocking), batches, failures isolated, flush and close, submit cost."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Sequence
from dataclasses import replace
from pathlib import Path

import pytest

from cluster.events.model import Event, make_event
from cluster.events.store import EventStore
from cluster.events.writer import EventWriter

JPEG = b"\xff\xd8\xff\xe0 best shot"


def ev(i: int, **kw: object) -> Event:
    return make_event(
        community="c1",
        gate="g1",
        device="cam-1",
        kind="face",
        action="OPEN",
        track_id=f"t{i}",
        start=1000.0 + i,
        end=1001.0 + i,
        score=0.9,
        quality=0.8,
        **kw,  # type: ignore[arg-type]
    )


@pytest.fixture
def store(tmp_path: Path) -> Iterator[EventStore]:
    s = EventStore(tmp_path)
    yield s
    s.close()


def _wait_until(predicate: object, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.001)


def test_submit_flush_and_duplicates(store: EventStore) -> None:
    seen: list[list[str]] = []
    writer = EventWriter(store, 100, on_written=lambda evs: seen.append([e.id for e in evs]))
    try:
        events = [ev(i) for i in range(20)]
        for e in events:
            assert writer.submit(e, JPEG)
        assert writer.submit(events[0])  # a re-emitted passage: stored once
        assert writer.flush(5.0)
        stats = writer.stats
        assert (stats.written, stats.duplicates, stats.overflow, stats.failed) == (20, 1, 0, 0)
        assert store.count_events() == 20
        assert sorted(i for batch in seen for i in batch) == sorted(e.id for e in events)
        assert store.thumbnail("c1", events[3].id) == JPEG
    finally:
        writer.close()


def test_overflow_is_counted_and_logged_never_blocking(
    store: EventStore, caplog: pytest.LogCaptureFixture
) -> None:
    writer = EventWriter(store, queue_size=5)
    try:
        with store._lock:  # the disk is stuck: the writer thread blocks in its first batch
            assert writer.submit(ev(0))
            _wait_until(lambda: writer.stats.queued == 0)
            accepted = [writer.submit(ev(i)) for i in range(1, 6)]
            with caplog.at_level(logging.WARNING, logger="cluster.events.writer"):
                t0 = time.perf_counter()
                dropped = [writer.submit(ev(i)) for i in range(6, 9)]
                elapsed = time.perf_counter() - t0
            assert accepted == [True] * 5 and dropped == [False] * 3
            assert elapsed < 0.05  # never waits for a place
            assert writer.stats.overflow == 3 and writer.stats.queued == 5
        assert writer.flush(5.0)
        assert writer.stats.written == 6 and store.count_events() == 6
        warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
        assert warnings and "1 dropped so far" in warnings[0]  # rate-limited: one per 5 s
    finally:
        writer.close()


def test_a_bad_event_fails_alone(store: EventStore) -> None:
    writer = EventWriter(store, 100)
    try:
        good = [ev(i) for i in range(5)]
        bad = replace(ev(99), end=0.0)  # ends before it starts
        with store._lock:  # queue them all so they form one batch
            for e in good[:2]:
                writer.submit(e)
            _wait_until(lambda: writer.stats.queued == 0)
            writer.submit(good[2])
            writer.submit(bad)
            writer.submit(good[3], b"not a jpeg")
            writer.submit(good[4])
        assert writer.flush(5.0)
        stats = writer.stats
        assert stats.written == 4 and stats.failed == 2
        assert stats.last_error is not None and "JPEG" in stats.last_error
        assert {e.id for e in store.query("c1")[0]} == {good[i].id for i in (0, 1, 2, 4)}
    finally:
        writer.close()


def test_on_written_errors_do_not_stop_the_writer(store: EventStore) -> None:
    def broken(events: Sequence[Event]) -> None:
        raise RuntimeError("detector bug")

    writer = EventWriter(store, 10, on_written=broken)
    try:
        writer.submit(ev(1))
        writer.flush(5.0)
        writer.submit(ev(2))
        writer.flush(5.0)
        assert writer.stats.written == 2 and "detector bug" in (writer.stats.last_error or "")
    finally:
        writer.close()


def test_close_drains_then_rejects(store: EventStore) -> None:
    writer = EventWriter(store, 1000)
    for i in range(300):
        writer.submit(ev(i))
    writer.close()
    assert store.count_events() == 300
    assert writer.submit(ev(1000)) is False
    assert writer.stats.rejected == 1
    writer.close()  # twice is fine


def test_submit_costs_microseconds(store: EventStore) -> None:
    writer = EventWriter(store, 20_000)
    try:
        events = [ev(i) for i in range(1000)]
        costs = []
        for e in events:
            t0 = time.perf_counter_ns()
            writer.submit(e, JPEG)
            costs.append(time.perf_counter_ns() - t0)
        costs.sort()
        p50_us = costs[len(costs) // 2] / 1000
        assert p50_us < 100, f"submit p50 {p50_us:.1f} µs"
        assert writer.flush(10.0) and writer.stats.written == 1000
    finally:
        writer.close()
