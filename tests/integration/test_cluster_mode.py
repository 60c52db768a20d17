"""Cluster mode end to end on a real Ray cluster of three one-CPU nodes on this machine: real
models in the recognizer workers, real stores in the index actors, real gRPC, real photos.

The frontend serves the unchanged gRPC API; these tests check that it decides as the embedded
engine does, that an enrolment or removal is seen by every worker when the call returns, and
that the registry, search and vehicle calls work across the index actors.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import grpc
import pytest
from cluster_site import (
    QUIET_S,
    ClusterSite,
    cluster_config,
    passage,
    start_ray,
    stop_ray,
)
from streaming import stream_in_step

from cluster.distributed.routing import pick_worker
from cluster.distributed.runtime import open_cluster_node
from cluster.distributed.worker import LazyFrame
from cluster.engine import Lane
from cluster.node import Node
from cluster.thumbnails import face_thumbnail
from recognizer.faces.analyzer import searched_whole_frame
from smartgate.config import Config
from smartgate.errors import UnavailableError
from smartgate.v1 import (
    capture_pb2,
    capture_pb2_grpc,
    common_pb2,
    events_pb2,
    registry_pb2,
    registry_pb2_grpc,
    search_pb2,
)

pytestmark = pytest.mark.integration

OBAMA_ENROL = "examples_obama.jpg"
OBAMA_PASSAGE = "examples_obama2.jpg"
BIDEN = "examples_knn_examples_train_biden_biden2.jpg"


@pytest.fixture(scope="module")
def ray_cluster() -> Iterator[object]:
    cluster = start_ray(nodes=3)
    yield cluster
    stop_ray(cluster)


@pytest.fixture(scope="module")
def site(
    ray_cluster: object, base_config: Config, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ClusterSite]:
    s = ClusterSite(cluster_config(base_config, tmp_path_factory.mktemp("cluster")))
    yield s
    s.close()


def _gate_for(worker: str, workers: list[str], community: str = "c1") -> str:
    """A gate whose frames an idle pool routes to ``worker``."""
    for i in range(1000):
        gate = f"door-{i}"
        if pick_worker(f"{community}/{gate}", dict.fromkeys(workers, 0)) == worker:
            return gate
    raise AssertionError(f"no gate routes to {worker}")


def test_workers_run_on_separate_nodes(site: ClusterSite) -> None:
    infos = site.engine.pool.live_infos()
    assert len(infos) == 2
    assert len({i.pid for i in infos.values()}) == 2
    assert len({i.node_id for i in infos.values()}) == 2  # one CPU per node, one CPU per worker


def test_a_passage_decides_as_in_embedded_mode(
    site: ClusterSite, channel: grpc.Channel, node: Node, faces_dir: Path
) -> None:
    images = passage(faces_dir, OBAMA_PASSAGE, frames=10)
    site.enroll(faces_dir, "obama", OBAMA_ENROL)
    registry_pb2_grpc.RegistryStub(channel).EnrollPerson(
        registry_pb2.EnrollPersonRequest(
            community="c1", person_id="obama", images=[(faces_dir / OBAMA_ENROL).read_bytes()]
        )
    )
    # In step: sent at once, every frame may be in flight before the decision is tracked, and
    # then none can carry it over.
    embedded = stream_in_step(capture_pb2_grpc.CaptureStub(channel), images, "door-1")
    clustered = stream_in_step(site.capture, images, "door-1")
    assert [d.status.code for d in clustered] == [0] * 10
    assert [d.frame_action for d in clustered] == [d.frame_action for d in embedded]
    assert [d.action for d in clustered] == [d.action for d in embedded]
    decided = [d.action for d in clustered if d.action != capture_pb2.ACTION_NONE]
    assert decided == [capture_pb2.ACTION_OPEN]
    # Up to the decision every frame is embedded afresh in both modes. After it both modes may
    # carry the decided face's embedding over (which frames do depends on timing), so only the
    # identities must agree there.
    decision = next(i for i, d in enumerate(clustered) if d.action != capture_pb2.ACTION_NONE)
    for i, (c, e) in enumerate(zip(clustered, embedded, strict=True)):
        assert [f.match.person_id for f in c.faces] == [f.match.person_id for f in e.faces]
        # Which frames are searched only around the face depends on timing (and a region's
        # boxes differ by the detector's noise): the same figures where both searched whole.
        whole = searched_whole_frame(dict(c.timings_ms)) and searched_whole_frame(
            dict(e.timings_ms)
        )
        for fc, fe in zip(c.faces, e.faces, strict=True):
            if i <= decision and whole:
                assert fc.box.x1 == pytest.approx(fe.box.x1, abs=0.5)
                assert fc.match.score == pytest.approx(fe.match.score, abs=1e-4)
        assert {"decode", "match"} <= set(c.timings_ms)
        assert {"detect", "detect_region"} & set(c.timings_ms)
        assert i > decision or "embed" in c.timings_ms
    # The workers carried the decided face's embedding over some frames and searched only
    # around it, as embedded mode does.
    assert any("embed" not in c.timings_ms for c in clustered[decision + 1 :])
    assert any(not searched_whole_frame(dict(c.timings_ms)) for c in clustered[decision + 1 :])
    time.sleep(QUIET_S + 0.6)
    events = [e for e in site.events() if e.gate == "door-1"]
    assert len(events) == 1
    assert events[0].action == "OPEN" and events[0].person_id == "obama"
    assert events[0].has_thumbnail  # cut by the worker: the frontend decoded no frame
    jpeg = site.search.GetEventImage(
        events_pb2.GetEventImageRequest(community="c1", event_id=events[0].id)
    ).jpeg
    assert jpeg[:3] == b"\xff\xd8\xff"
    # The worker sends each face's thumbnail: the frontend needs no pixels of its own.
    result = site.engine.process_frame("c1", images[0], gate="door-thumbs")
    assert result.faces and result.faces[0].thumbnail[:3] == b"\xff\xd8\xff"
    assert isinstance(result.image, LazyFrame) and not result.image.decoded
    # The same thumbnail, cut from the same pixels, as the embedded node's. (The passages'
    # best shots may come from different frames: which frames were searched only around the
    # decided face depends on timing, and a region search's box differs by the detector's noise.)
    mine = node.engine.process_frame("c1", images[0], gate="door-thumbs")
    assert mine.image is not None and len(mine.faces) == len(result.faces)
    cut_here = [face_thumbnail(mine.image.scaled, f.face.box, mine.image.scale) for f in mine.faces]
    assert [f.thumbnail for f in result.faces] == cut_here


def test_enrolment_and_removal_are_seen_by_every_worker_at_once(
    site: ClusterSite, faces_dir: Path
) -> None:
    engine = site.engine
    workers = sorted(engine.pool.live_infos())
    frame = passage(faces_dir, BIDEN, frames=1)[0]
    gates = [_gate_for(w, workers) for w in workers]
    site.enroll(faces_dir, "biden", BIDEN)
    for gate in gates:  # straight after the call returned, on each worker
        result = engine.process_frame("c1", frame, lane=Lane.PEDESTRIAN, gate=gate)
        assert result.action.name == "OPEN", gate
        assert result.faces[0].identification.person.person_id == "biden"
    site.registry.RemovePerson(registry_pb2.RemovePersonRequest(community="c1", person_id="biden"))
    for gate in gates:
        result = engine.process_frame("c1", frame, lane=Lane.PEDESTRIAN, gate=gate)
        assert result.action.name == "STRANGER", gate


def test_registry_search_and_vehicles_across_index_actors(
    site: ClusterSite, faces_dir: Path
) -> None:
    created = site.registry.CreateCommunity(registry_pb2.CreateCommunityRequest(community="c2"))
    assert created.created
    again = site.registry.CreateCommunity(registry_pb2.CreateCommunityRequest(community="c2"))
    assert not again.created
    site.enroll(faces_dir, "obama-c2", OBAMA_ENROL, community="c2")
    site.enroll(faces_dir, "biden-c2", BIDEN, community="c2")
    listed = site.registry.ListCommunities(registry_pb2.ListCommunitiesRequest())
    assert {"c1", "c2"} <= set(listed.communities)
    persons = site.registry.ListPersons(registry_pb2.ListPersonsRequest(community="c2"))
    assert [p.person_id for p in persons.persons] == ["biden-c2", "obama-c2"]

    hits = site.search.SearchFace(
        search_pb2.SearchFaceRequest(
            communities=["c1", "c2"],
            image=(faces_dir / OBAMA_PASSAGE).read_bytes(),
            top_k=3,
            reason="cluster-mode test",
        )
    ).hits
    assert {(h.person.person_id, h.person.community) for h in hits[:2]} == {
        ("obama", "c1"),
        ("obama-c2", "c2"),
    }
    assert all(a.score >= b.score for a, b in itertools.pairwise(hits))

    site.registry.AddVehicle(
        registry_pb2.AddVehicleRequest(
            community="c2", plate="皖AZ576J", role=common_pb2.ROLE_WATCHLIST
        )
    )
    plates = site.search.SearchPlate(
        search_pb2.SearchPlateRequest(
            communities=["c1", "c2"], plate="皖AZ576J", fuzzy=True, reason="cluster-mode test"
        )
    ).hits
    assert [(p.vehicle.plate, p.vehicle.community) for p in plates] == [("皖AZ576J", "c2")]
    vehicles = site.registry.ListVehicles(registry_pb2.ListVehiclesRequest(community="c2"))
    assert [v.plate for v in vehicles.vehicles] == ["皖AZ576J"]

    with pytest.raises(grpc.RpcError) as err:
        site.registry.ListPersons(registry_pb2.ListPersonsRequest(community="nowhere"))
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.RpcError) as err:
        site.enroll(faces_dir, "obama-c2", OBAMA_ENROL, community="c2")
    assert err.value.code() == grpc.StatusCode.ALREADY_EXISTS


def test_bad_and_unknown_frames_are_answered_in_stream(site: ClusterSite, faces_dir: Path) -> None:
    good = passage(faces_dir, OBAMA_PASSAGE, frames=1)[0]
    frames = [
        capture_pb2.Frame(community="c1", gate="g9", seq=0, image=b"not an image"),
        capture_pb2.Frame(community="nowhere", gate="g9", seq=1, image=good),
        capture_pb2.Frame(community="c1", gate="g9", seq=2, image=good),
    ]
    decisions = list(site.capture.Stream(iter(frames), timeout=60))
    assert [d.status.code for d in decisions] == [
        grpc.StatusCode.INVALID_ARGUMENT.value[0],
        grpc.StatusCode.NOT_FOUND.value[0],
        0,
    ]
    assert decisions[2].faces[0].match.person_id == "obama"


def test_a_worker_that_cannot_load_its_models_fails_the_start_with_the_reason(
    ray_cluster: object, base_config: Config, tmp_path: Path
) -> None:
    no_models = replace(base_config.models, cache_dir=tmp_path / "no-models")
    config = cluster_config(
        replace(base_config, models=no_models), tmp_path / "data", min_workers=1, max_workers=1
    )
    with pytest.raises(UnavailableError, match="failed to start") as err:
        open_cluster_node(config)
    assert "smartgate models fetch" in str(err.value)  # the ModelError's fix, from the worker
