"""Index-change notifications against a real redis-server on a free port: a real registry store
(SQLite) publishes its change log to ``smartgate:{community}:index-changes`` in order; Redis
killed and restarted (empty) while changes are made: none lost, none duplicated; entries whose
XADD reply was lost are adopted, not sent twice; a stream another store wrote is started again;
a follower reads the changes in order across a Redis restart and calls its handlers; an
embedded node with ``events.redis_url`` publishes its registry's changes."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import redis
from redis_server import RedisServer

from cluster.engine import Engine
from cluster.erasure import erase_person
from cluster.events.index_changes import (
    IndexChangeFollower,
    IndexChangePublisher,
    changes_stream,
)
from cluster.node import Node
from indexer.changelog import Change, pseudonym
from indexer.crypto import KeyRing, new_key
from indexer.registry import FaceRegistry
from indexer.store import Store
from smartgate.config import Config, EventsConfig

pytestmark = pytest.mark.integration

FAST = {"backoff_s": (0.02, 0.2), "poll_s": 0.05, "timeout_s": 0.5}
DIM = 8
KEYS = KeyRing([new_key()])


@pytest.fixture
def server() -> Iterator[RedisServer]:
    with RedisServer() as running:
        yield running


@pytest.fixture
def client(server: RedisServer) -> Iterator[redis.Redis]:
    c = redis.Redis.from_url(server.url, decode_responses=True)
    yield c
    c.close()


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store(tmp_path / "registry", KEYS)
    yield s
    s.close()


def enroll(store: Store, person: str, community: str = "c1", replace: bool = False) -> None:
    rows = np.random.default_rng(len(person)).standard_normal((2, DIM)).astype(np.float32)
    store.enroll(
        community,
        person,
        rows / np.linalg.norm(rows, axis=1, keepdims=True),
        name="Someone",
        role="resident",
        expires_at=None,
        replace=replace,
        now=time.time(),
    )


def entries(client: redis.Redis, community: str = "c1") -> list[tuple[str, dict[str, str]]]:
    found: Any = client.xrange(changes_stream(community))
    return [(entry_id, dict(fields)) for entry_id, fields in found]


def as_sent(store: Store, community: str = "c1") -> list[tuple[str, dict[str, str]]]:
    """What the stream must hold: every logged change of ``community``, once, in order."""
    epoch = store.epoch()
    return [(f"{c.seq}-0", c.fields(epoch)) for c in store.community_changes(community)]


def wait_for(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_changes_reach_their_communitys_stream_in_order(
    server: RedisServer, client: redis.Redis, store: Store
) -> None:
    publisher = IndexChangePublisher(store, server.url, **FAST)  # type: ignore[arg-type]
    try:
        enroll(store, "p1")
        enroll(store, "p2", community="c2")
        enroll(store, "p1", replace=True)
        store.add_vehicle(
            "c1", "A12345", role="resident", owner="", expires_at=None, replace=False, now=1.0
        )
        store.remove_vehicle("c1", "A12345")
        store.remove_person("c1", "p1")
        assert publisher.flush(10)
        got = entries(client)
        assert got == as_sent(store) and len(got) == 5
        assert [f["kind"] for _, f in got] == [
            "person_enrolled",
            "person_replaced",
            "vehicle_added",
            "vehicle_removed",
            "person_removed",
        ]
        assert got[-1][1]["id"] == pseudonym(KEYS, "c1", "person", "p1")
        assert entries(client, "c2") == as_sent(store, "c2")
        assert int(got[-1][1]["seq"]) == store.community_version("c1")
        stats = publisher.stats
        assert (stats.sent, stats.adopted, stats.reset, stats.pending) == (6, 0, 0, 0)
    finally:
        publisher.close()


def test_redis_down_then_back_loses_and_duplicates_nothing(
    server: RedisServer, store: Store
) -> None:
    publisher = IndexChangePublisher(store, server.url, **FAST)  # type: ignore[arg-type]
    try:
        enroll(store, "before")
        assert publisher.flush(10)
        server.kill()
        done = store.community_version("c1")
        for i in range(20):  # a registry carries on while Redis is down
            enroll(store, f"p{i}")
        store.remove_person("c1", "p3")
        assert not publisher.flush(0.5)
        assert publisher.stats.pending == 21 and not publisher.stats.connected
        server.start()  # back, and empty (no persistence): what was sent before is gone
        assert publisher.flush(15)
        fresh = redis.Redis.from_url(server.url, decode_responses=True)
        got = entries(fresh)
        fresh.close()
        expected = [e for e in as_sent(store) if int(e[0].split("-")[0]) > done]
        assert got == expected and len(got) == 21
        assert publisher.stats.errors >= 1
    finally:
        publisher.close()


def test_an_entry_whose_reply_was_lost_is_adopted_not_sent_twice(
    server: RedisServer, client: redis.Redis, tmp_path: Path
) -> None:
    """The publisher (or its process) died after Redis took the first two XADDs but before the
    cursor moved: the next publisher finds them there and sends the rest once."""
    store = Store(tmp_path / "registry", KEYS)
    for i in range(5):
        enroll(store, f"p{i}")
    epoch = store.epoch()
    for change in store.changes_after(0, limit=2):  # what the lost attempt left in Redis
        client.xadd(changes_stream("c1"), change.fields(epoch), id=f"{change.seq}-0")  # type: ignore[arg-type]
    store.close()
    store = Store(tmp_path / "registry", KEYS)  # a restarted process
    publisher = IndexChangePublisher(store, server.url, **FAST)  # type: ignore[arg-type]
    try:
        assert publisher.flush(10)
        assert entries(client) == as_sent(store) and len(entries(client)) == 5
        assert (publisher.stats.sent, publisher.stats.adopted) == (3, 2)
    finally:
        publisher.close()
        store.close()


def test_a_stream_another_store_wrote_is_started_again(
    server: RedisServer, client: redis.Redis, tmp_path: Path
) -> None:
    """A community's data directory replaced (its seqs start again at 1): its stream is reset
    rather than every new change refused."""
    old = Store(tmp_path / "old", KEYS)
    old_publisher = IndexChangePublisher(old, server.url, **FAST)  # type: ignore[arg-type]
    for i in range(6):
        enroll(old, f"p{i}")
    assert old_publisher.flush(10)
    old_publisher.close()
    old.close()
    new = Store(tmp_path / "new", KEYS)
    publisher = IndexChangePublisher(new, server.url, **FAST)  # type: ignore[arg-type]
    try:
        enroll(new, "q1")
        enroll(new, "q2")
        assert publisher.flush(10)
        assert entries(client) == as_sent(new) and len(entries(client)) == 2
        assert publisher.stats.reset == 1
    finally:
        publisher.close()
        new.close()


def test_the_follower_reads_every_change_in_order_across_a_redis_restart(
    server: RedisServer, store: Store
) -> None:
    heard: list[Change] = []
    lock = threading.Lock()

    def record(change: Change) -> None:
        with lock:
            heard.append(change)

    def broken(change: Change) -> None:
        raise RuntimeError("a handler bug must not stop the others")

    enroll(store, "old")  # before the follower starts: not replayed
    publisher = IndexChangePublisher(store, server.url, **FAST)  # type: ignore[arg-type]
    assert publisher.flush(10)
    communities = ["c1"]
    follower = IndexChangeFollower(
        server.url,
        lambda: list(communities),
        [broken, record],
        refresh_s=0.1,
        block_ms=100,
        backoff_s=(0.02, 0.2),
        timeout_s=0.5,
    )
    try:
        wait_for(lambda: "c1" in follower.following())
        enroll(store, "p1")
        store.remove_person("c1", "p1")
        wait_for(lambda: len(heard) == 2)
        server.kill()
        enroll(store, "p2")  # made while Redis is down
        store.remove_person("c1", "p2")
        time.sleep(0.3)
        server.start()
        wait_for(lambda: len(heard) == 4, timeout=15)
        communities.append("c2")  # a community found later is read from its start
        enroll(store, "r1", community="c2")
        wait_for(lambda: len(heard) == 5)
        time.sleep(0.3)  # nothing more arrives: no duplicates
        assert [(c.community, c.kind) for c in heard] == [
            ("c1", "person_enrolled"),
            ("c1", "person_removed"),
            ("c1", "person_enrolled"),
            ("c1", "person_removed"),
            ("c2", "person_enrolled"),
        ]
        p2 = pseudonym(KEYS, "c1", "person", "p2")
        assert heard[3].subject == p2 and heard[3] == store.community_changes("c1")[-1]
        assert follower.failed == 5 and follower.applied == 5
    finally:
        follower.close()
        publisher.close()


def test_the_embedded_node_publishes_its_registrys_changes(  # type: ignore[no-untyped-def]
    server: RedisServer,
    client: redis.Redis,
    face_analyzer,
    plate_reader,
    base_config: Config,
    faces_dir: Path,
    tmp_path: Path,
) -> None:
    """``events.redis_url`` set on an embedded node: its registry store's publisher runs, an
    erasure is notified, and no stream entry holds the person's id in clear."""
    config = replace(
        base_config, data_dir=tmp_path, events=replace(EventsConfig(), redis_url=server.url)
    )
    registry = FaceRegistry(tmp_path, face_analyzer.embedder.dim, keys=KEYS)
    node = Node.around(Engine(config, face_analyzer, registry, plate_reader))
    node.owns_engine = True
    try:
        publisher = node.index_changes
        assert isinstance(publisher, IndexChangePublisher)
        photo = (faces_dir / "examples_obama.jpg").read_bytes()
        node.engine.enroll("c1", "p-7f3a9-obama", [photo], name="Barack")
        erase_person(node, "c1", "p-7f3a9-obama")
        assert publisher.flush(10)
        got = entries(client)
        assert [f["kind"] for _, f in got] == ["person_enrolled", "person_removed"]
        assert {f["id"] for _, f in got} == {pseudonym(KEYS, "c1", "person", "p-7f3a9-obama")}
        assert not any("7f3a9" in str(f) or "Barack" in str(f) for _, f in got)
        assert got == as_sent(registry.store)
    finally:
        node.close()
