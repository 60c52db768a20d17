"""The event log against a real redis-server on a free port: streams read through consumer
groups, Redis killed and restarted on the same port (events wait in the local outbox, then
arrive in order, once), a process restart with a pending outbox, erasure by XDEL."""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from redis_server import RedisServer

from cluster.events.model import Event, event_fields, make_event
from cluster.events.redis_outbox import RedisPublisher, stream_name
from cluster.events.service import EventLog
from cluster.events.store import EventStore
from smartgate.config import EventsConfig

pytestmark = pytest.mark.integration

FAST = {"backoff_s": (0.02, 0.2), "poll_s": 0.05, "timeout_s": 0.5}
_tracks = itertools.count()


def ev(i: int, *, person: str | None = None, action: str = "NONE", start: float = 0.0) -> Event:
    t = start or 1000.0 + i
    return make_event(
        community="c1",
        gate="g1",
        device="cam",
        kind="face",
        action=action,  # type: ignore[arg-type]
        track_id=f"t{next(_tracks)}",
        start=t,
        end=t + 0.5,
        score=0.9,
        quality=0.8,
        person_id=person if person is not None else f"p{i}",
    )


@pytest.fixture
def server() -> Iterator[RedisServer]:
    with RedisServer() as running:
        yield running


@pytest.fixture
def client(server: RedisServer) -> Iterator[redis.Redis]:
    c = redis.Redis.from_url(server.url, decode_responses=True)
    yield c
    c.close()


def _stream_ids(client: redis.Redis, stream: str = "smartgate:c1:events") -> list[str]:
    entries: Any = client.xrange(stream)
    return [fields["id"] for _, fields in entries]


def test_events_and_alerts_reach_consumer_groups(
    server: RedisServer, client: redis.Redis, tmp_path: Path
) -> None:
    events_stream, alerts_stream = stream_name("c1", "events"), stream_name("c1", "alerts")
    for stream in (events_stream, alerts_stream):
        client.xgroup_create(stream, "guards", id="0", mkstream=True)
    log = EventLog.open(tmp_path, EventsConfig(redis_url=server.url), purge=False)
    try:
        opened = ev(1, action="OPEN", start=5000.0)
        tailgater = ev(2, start=5001.0)
        sent = [ev(i) for i in range(10, 20)] + [opened, tailgater]
        for e in sent:
            assert log.writer.submit(e, b"\xff\xd8\xff jpeg")
        assert log.writer.flush(5.0)
        assert log.publisher is not None and log.publisher.flush(5.0)

        got: Any = client.xreadgroup("guards", "desk-1", {events_stream: ">"}, count=100)
        entries = got[0][1]
        assert [f["id"] for _, f in entries] == [e.id for e in sent]
        assert entries[0][1] == event_fields(sent[0], has_thumbnail=True)
        assert client.xack(events_stream, "guards", *[eid for eid, _ in entries]) == len(sent)
        got = client.xreadgroup("guards", "desk-1", {alerts_stream: ">"}, count=10)
        ((_, alert_entries),) = got
        assert [(f["kind"], f["event_id"]) for _, f in alert_entries] == [
            ("tailgating", tailgater.id)
        ]
        assert int(alert_entries[0][1]["seq"]) == log.store.alerts_after("c1", 0)[0].seq
    finally:
        log.close()


def test_streams_are_bounded(server: RedisServer, client: redis.Redis, tmp_path: Path) -> None:
    store = EventStore(tmp_path, outbox=True)
    publisher = RedisPublisher(store, server.url, maxlen=100, **FAST)  # type: ignore[arg-type]
    try:
        store.put_many([(ev(i), None) for i in range(1500)])
        assert publisher.flush(10.0)
        length = client.xlen("smartgate:c1:events")
        assert 100 <= length < 300  # MAXLEN ~: trimmed by whole macro nodes
        assert store.count_events() == 1500  # the local log keeps everything
    finally:
        publisher.close()
        store.close()


def test_redis_down_then_back_replays_in_order_once(server: RedisServer, tmp_path: Path) -> None:
    store = EventStore(tmp_path, outbox=True)
    publisher = RedisPublisher(store, server.url, **FAST)  # type: ignore[arg-type]
    log_writer = None
    try:
        from cluster.events.writer import EventWriter

        log_writer = EventWriter(store, 1000)
        before = [ev(i) for i in range(10)]
        for e in before:
            log_writer.submit(e)
        assert log_writer.flush(5.0) and publisher.flush(5.0)

        server.kill()  # Redis crashes (and, without persistence, loses its streams)
        during = [ev(i) for i in range(10, 60)]
        for e in during:
            assert log_writer.submit(e)  # the capture path does not notice
        assert log_writer.flush(5.0)
        assert store.count_events() == 60
        assert not publisher.flush(0.5)
        stats = publisher.stats
        assert stats.pending == 50 and not stats.connected and stats.errors > 0
        assert stats.last_error is not None

        server.start()  # back, on the same port
        assert publisher.flush(10.0)
        with redis.Redis.from_url(server.url, decode_responses=True) as c:
            ids = _stream_ids(c)
        assert ids == [e.id for e in during]  # in order, once
        # A passage re-emitted after all this is still stored and sent once.
        for e in during[:5]:
            log_writer.submit(e)
        assert log_writer.flush(5.0) and publisher.flush(5.0)
        with redis.Redis.from_url(server.url, decode_responses=True) as c:
            assert _stream_ids(c) == ids
    finally:
        if log_writer is not None:
            log_writer.close()
        publisher.close()
        store.close()


def test_process_restart_with_a_pending_outbox(server: RedisServer, tmp_path: Path) -> None:
    server.stop()
    store = EventStore(tmp_path, outbox=True)
    publisher = RedisPublisher(store, server.url, **FAST)  # type: ignore[arg-type]
    events = [ev(i) for i in range(40)]
    store.put_many([(e, None) for e in events[:25]])
    time.sleep(0.1)  # the publisher tries, and fails
    publisher.close()
    store.close()  # the process stops with 25 entries pending

    server.start()
    # The previous process XADDed the first 3 and died before recording it.
    with redis.Redis.from_url(server.url, decode_responses=True) as c:
        for e in events[:3]:
            c.xadd("smartgate:c1:events", event_fields(e, has_thumbnail=False))

    store = EventStore(tmp_path, outbox=True)
    publisher = RedisPublisher(store, server.url, **FAST)  # type: ignore[arg-type]
    try:
        # The restarted capture path re-emits the passage in progress, then carries on.
        assert store.put_many([(e, None) for e in events[24:]]) == [False] + [True] * 15
        assert publisher.flush(10.0)
        with redis.Redis.from_url(server.url, decode_responses=True) as c:
            assert _stream_ids(c) == [e.id for e in events]  # each once, in order
        assert publisher.stats.adopted == 3
    finally:
        publisher.close()
        store.close()


def test_erase_removes_stream_entries(
    server: RedisServer, client: redis.Redis, tmp_path: Path
) -> None:
    store = EventStore(tmp_path, outbox=True)
    publisher = RedisPublisher(store, server.url, **FAST)  # type: ignore[arg-type]
    try:
        mine = [ev(i, person="p1") for i in range(5)]
        others = [ev(i, person="p2") for i in range(5, 10)]
        store.put_many([(e, None) for e in mine + others])
        assert publisher.flush(5.0)
        assert len(_stream_ids(client)) == 10

        publisher.close()  # erase while a late entry of p1 is still pending
        late = ev(20, person="p1")
        store.put(late)
        report = store.erase_person("c1", "p1")
        assert report.events == 6 and report.stream_entries == 5

        publisher = RedisPublisher(store, server.url, **FAST)  # type: ignore[arg-type]
        assert publisher.flush(5.0)
        assert _stream_ids(client) == [e.id for e in others]
        assert publisher.stats.deleted == 5
    finally:
        publisher.close()
        store.close()
