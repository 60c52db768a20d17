"""One stranger identity per community across the cluster (``cluster.distributed.strangers``),
on a real Ray cluster of two one-CPU nodes on this machine: two frontends (two
``ClusterNode``s behind two real gRPC servers, one worker each) on one data directory, real
models, real photos, the community's strangers in its index actor.

* the same unknown person at two gates, one behind each frontend: the same stranger id;
* that person enrolled later and removed through the other frontend: the stranger is gone
  for both frontends, with its passages;
* the index actor SIGKILLed once its strangers were saved behind: it comes back with them,
  the same face joins the same stranger, and a new one gets an id never given before.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from cluster_site import QUIET_S, ClusterSite, cluster_config, passage, start_ray, stop_ray
from streaming import stream

from cluster.distributed.index import community_dir
from cluster.distributed.strangers import ID_BLOCK, STRANGERS_DIR
from cluster.passages import STRANGERS_DIR as NODE_STRANGERS_DIR
from indexer.strangers import MANIFEST
from smartgate.config import Config
from smartgate.v1 import events_pb2, registry_pb2

pytestmark = pytest.mark.integration

UNKNOWN = "examples_obama2.jpg"  # seen before they are enrolled
ENROL = "examples_obama.jpg"
OTHER = "examples_knn_examples_train_biden_biden2.jpg"
SAVE_S = 0.5  # cluster.strangers_save_s: the actors save their strangers this soon


@pytest.fixture(scope="module")
def frontends(
    base_config: Config, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[ClusterSite, ClusterSite]]:
    ray_cluster = start_ray(nodes=2)
    config = cluster_config(
        base_config,
        tmp_path_factory.mktemp("two-frontends"),
        min_workers=1,
        max_workers=1,
        strangers_save_s=SAVE_S,
    )
    sites: list[ClusterSite] = []
    try:
        sites = [ClusterSite(config), ClusterSite(config)]  # one data dir, one Ray cluster
        yield sites[0], sites[1]
    finally:
        for s in sites:
            s.close()
        stop_ray(ray_cluster)


def _passage(site: ClusterSite, faces_dir: Path, photo: str, gate: str, community: str) -> None:
    decisions = stream(site.capture, passage(faces_dir, photo, frames=4), gate, community)
    assert [d.status.code for d in decisions] == [0] * 4


def _settle(*sites: ClusterSite) -> None:
    """Let every open passage end (QUIET_S of silence) and its event be written."""
    time.sleep(QUIET_S + 0.8)
    for s in sites:
        assert s.node.events.writer.flush(10)


def _strangers_by_gate(site: ClusterSite, community: str) -> dict[str, str]:
    return {e.gate: e.stranger_id for e in site.events(community) if e.stranger_id}


def test_two_frontends_give_one_person_one_stranger_id_and_an_erasure_reaches_both(
    frontends: tuple[ClusterSite, ClusterSite], faces_dir: Path
) -> None:
    one, two = frontends
    one.registry.CreateCommunity(registry_pb2.CreateCommunityRequest(community="c1"))
    _passage(two, faces_dir, OTHER, "side-door", "c1")  # somebody else first, on one side
    _settle(two)
    _passage(one, faces_dir, UNKNOWN, "north-gate", "c1")
    _passage(two, faces_dir, UNKNOWN, "south-gate", "c1")
    _settle(one, two)
    seen = _strangers_by_gate(one, "c1")
    # One book: s-2 at both gates (a book per frontend would say s-1 at the north gate).
    assert seen == {"side-door": "s-1", "north-gate": "s-2", "south-gate": "s-2"}
    assert _strangers_by_gate(two, "c1") == seen
    stats = two.node.passages.strangers.stats("c1")
    assert (stats.strangers, stats.sightings) == (2, 3)
    assert not (one.node.config.data_dir / NODE_STRANGERS_DIR).exists()  # the actor's alone

    # Enrolled later through the second frontend, then erased through it: the stranger the
    # first frontend's passage was linked to goes too, with both passages.
    two.enroll(faces_dir, "obama", ENROL)
    two.registry.RemovePerson(
        registry_pb2.RemovePersonRequest(community="c1", person_id="obama", reason="request 7")
    )
    assert [s.stranger_id for s in one.node.passages.strangers.strangers("c1")] == ["s-1"]
    assert _strangers_by_gate(one, "c1") == {"side-door": "s-1"}
    trajectory = one.search.Trajectory(
        events_pb2.TrajectoryRequest(stranger_id="s-2", communities=["c1"], reason="test")
    )
    assert list(trajectory.events) == []


def test_a_killed_index_actor_comes_back_with_its_strangers(
    frontends: tuple[ClusterSite, ClusterSite], faces_dir: Path
) -> None:
    one, two = frontends
    one.registry.CreateCommunity(registry_pb2.CreateCommunityRequest(community="c2"))
    _passage(one, faces_dir, UNKNOWN, "gate-a", "c2")
    _settle(one)
    (before,) = _strangers_by_gate(one, "c2").values()
    saved = community_dir(one.node.config.data_dir, "c2") / STRANGERS_DIR / MANIFEST
    deadline = time.monotonic() + 10 * SAVE_S
    while not saved.exists():  # saved behind by the actor, not by a frontend's flush
        assert time.monotonic() < deadline, "the actor did not save its strangers"
        time.sleep(0.05)

    directory = two.engine.directory
    pid = directory.read("c2", "info")["pid"]
    killed = time.monotonic()
    os.kill(pid, signal.SIGKILL)
    strangers = two.node.passages.strangers
    assert [s.stranger_id for s in strangers.strangers("c2")] == [before]  # waits for it
    print(f"\nindex actor killed: its strangers read back after {time.monotonic() - killed:.2f} s")
    assert directory.read("c2", "info")["pid"] != pid

    _passage(two, faces_dir, UNKNOWN, "gate-b", "c2")
    _passage(two, faces_dir, OTHER, "gate-c", "c2")
    _settle(one, two)
    after = _strangers_by_gate(one, "c2")
    assert after["gate-b"] == before  # the same face joins the stranger it was
    # A new face: numbered past the watermark the lost actor left (ids it may have issued
    # unsaved are never given again).
    assert after["gate-c"] == f"s-{1 + ID_BLOCK}"
    assert strangers.get("c2", before).sightings == 2
