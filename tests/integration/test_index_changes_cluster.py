"""Index-change notifications in cluster mode, on a real two-node Ray cluster with real models,
a real redis-server and real photos: the community's index actor publishes its change log, the
frontend's follower hears it, and a removal made through another path (straight to the index
actor, as another frontend's erasure does) makes the frontend drop the open passage it had
decided OPEN for that person, which is then never written with their id."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from cluster_site import ClusterSite, cluster_config, passage, start_ray, stop_ray
from redis_server import RedisServer
from streaming import stream

from cluster.events.index_changes import IndexChangeFollower
from indexer.changelog import Change, pseudonym
from smartgate.config import Config
from smartgate.v1 import capture_pb2

pytestmark = pytest.mark.integration

OBAMA_ENROL = "examples_obama.jpg"
OBAMA_PASSAGE = "examples_obama2.jpg"
QUIET_S = 3.0  # the passage stays open while the removal travels


@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisServer]:
    with RedisServer() as running:
        yield running


@pytest.fixture(scope="module")
def site(
    redis_server: RedisServer, base_config: Config, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ClusterSite]:
    cluster = start_ray(nodes=2)
    config = cluster_config(
        base_config, tmp_path_factory.mktemp("cluster"), QUIET_S, min_workers=1, max_workers=1
    )
    config = replace(config, events=replace(config.events, redis_url=redis_server.url))
    s = ClusterSite(config)
    yield s
    s.close()
    stop_ray(cluster)


def wait_for(condition: Callable[[], bool], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_a_removal_elsewhere_makes_the_frontend_forget_the_person(
    site: ClusterSite, faces_dir: Path
) -> None:
    follower = site.node.index_changes
    assert isinstance(follower, IndexChangeFollower)
    heard: list[Change] = []
    follower.handlers.append(heard.append)  # a hook of this frontend's, beside forget_removed
    keys = site.engine.registry.store.keys
    obama = pseudonym(keys, "c1", "person", "obama")

    site.enroll(faces_dir, "obama", OBAMA_ENROL)
    wait_for(lambda: [(c.kind, c.subject) for c in heard] == [("person_enrolled", obama)])
    enrolled = site.engine.directory.read("c1", "info")["version"]
    assert enrolled == heard[0].seq >= 1

    decisions = stream(site.capture, passage(faces_dir, OBAMA_PASSAGE, frames=8), "door-1")
    assert capture_pb2.ACTION_OPEN in [d.action for d in decisions]  # decided, still open

    # Removed through another path: straight at the community's index actor.
    assert site.engine.directory.write("c1", "remove", "obama") == 1
    wait_for(lambda: len(heard) == 2)
    assert (heard[1].kind, heard[1].subject) == ("person_removed", obama)
    assert site.engine.directory.read("c1", "info")["version"] == heard[1].seq > enrolled

    # The open passage was dropped: when the gate goes quiet nothing is written of it.
    time.sleep(QUIET_S + 1.0)
    assert [e for e in site.events() if e.gate == "door-1"] == []
    assert follower.failed == 0
