"""Privacy end to end on a real node and gRPC server, with the real models, real photos and a
real redis-server: the audit log of searches, reads and changes; the look-alike (poisoning)
check; encryption at rest; and erasure everywhere (registry, FAISS, strangers, events,
thumbnails, Redis streams), proved by scanning every file of the data directory."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import cv2
import grpc
import numpy as np
import pytest
import redis
from redis_server import RedisServer

from benchmarks.scenes import PassageSpec, passage_frames
from cluster.audit.log import verify
from cluster.engine import Engine
from cluster.node import Node
from cluster.server import RunningServer, start_server
from indexer.crypto import KeyRing
from indexer.registry import FaceRegistry
from smartgate.config import Config, EventsConfig, PrivacyConfig, TrackingConfig
from smartgate.v1 import (
    capture_pb2,
    capture_pb2_grpc,
    common_pb2,
    events_pb2,
    registry_pb2,
    registry_pb2_grpc,
    search_pb2,
    search_pb2_grpc,
)

pytestmark = pytest.mark.integration

QUIET_S = 0.4
PERSON = "p-erase-7f3a9"  # unique enough to grep the data directory for


@dataclass
class Site:
    node: Node
    server: RunningServer
    channel: grpc.Channel
    redis: redis.Redis

    @property
    def registry(self) -> registry_pb2_grpc.RegistryStub:
        return registry_pb2_grpc.RegistryStub(self.channel)

    @property
    def search(self) -> search_pb2_grpc.SearchStub:
        return search_pb2_grpc.SearchStub(self.channel)

    @property
    def data_dir(self) -> Path:
        return self.node.config.data_dir

    def settle(self) -> None:
        """Let open passages end, their events be stored and sent to Redis."""
        time.sleep(QUIET_S + 0.6)
        self.node.passages.expire(time.time() + 60)
        assert self.node.events.writer.flush(10)
        assert self.node.events.publisher is not None and self.node.events.publisher.flush(10)


@pytest.fixture
def site(face_analyzer, plate_reader, base_config: Config, tmp_path: Path) -> Iterator[Site]:  # type: ignore[no-untyped-def]
    data = tmp_path / "data"
    with RedisServer() as redis_server:
        config = replace(
            base_config,
            data_dir=data,
            tracking=TrackingConfig(quiet_s=QUIET_S),
            events=replace(EventsConfig(), redis_url=redis_server.url),
            privacy=PrivacyConfig(key_file=tmp_path / "keys" / "data.key"),
        )
        keys = KeyRing.from_config(config.privacy)
        registry = FaceRegistry(data, face_analyzer.embedder.dim, keys=keys)
        node = Node.around(Engine(config, face_analyzer, registry, plate_reader))
        server = start_server(node, config.server)
        channel = grpc.insecure_channel(server.address)
        client = redis.Redis.from_url(redis_server.url, decode_responses=True)
        try:
            yield Site(node, server, channel, client)
        finally:
            client.close()
            channel.close()
            server.stop(0)
            node.close()


def _photo(faces_dir: Path, name: str) -> bytes:
    return (faces_dir / name).read_bytes()


def _enroll(site: Site, faces_dir: Path, person: str, photo: str, **kw: Any) -> Any:
    return site.registry.EnrollPerson(
        registry_pb2.EnrollPersonRequest(
            community="c1", person_id=person, images=[_photo(faces_dir, photo)], **kw
        ),
        timeout=30,
    )


def _stream(site: Site, faces_dir: Path, photo: str, gate: str) -> list[capture_pb2.Decision]:
    photo_bgr = cv2.imread(str(faces_dir / photo))
    assert photo_bgr is not None
    images = passage_frames(np.asarray(photo_bgr), PassageSpec(frames=8), seed=1)
    frames = (
        capture_pb2.Frame(community="c1", gate=gate, device=f"cam-{gate}", seq=i, image=img)
        for i, img in enumerate(images)
    )
    return list(capture_pb2_grpc.CaptureStub(site.channel).Stream(frames, timeout=120))


def _files_with(directory: Path, needles: list[bytes]) -> dict[str, list[int]]:
    """File (relative) → indexes of the needles found in it, for every file under
    ``directory`` (SQLite ``-wal`` files, thumbnails, strangers files included)."""
    out: dict[str, list[int]] = {}
    for path in sorted(p for p in directory.rglob("*") if p.is_file()):
        data = path.read_bytes()
        hits = [i for i, n in enumerate(needles) if n in data]
        if hits:
            out[str(path.relative_to(directory))] = hits
    return out


def _embedding_needles(vectors: np.ndarray) -> list[bytes]:
    out: list[bytes] = []
    for row in np.asarray(vectors, np.float32):
        raw = row.astype("<f4").tobytes()
        out += [raw, row.astype("<f2").tobytes()]
        out += [raw[i : i + 16] for i in range(0, len(raw) - 16, 16)]
    return out


def test_audit_log_records_searches_reads_and_changes(site: Site, faces_dir: Path) -> None:
    _enroll(site, faces_dir, "obama", "examples_obama.jpg", reason="new resident")
    site.registry.CreateCommunity(registry_pb2.CreateCommunityRequest(community="c2"))
    image = _photo(faces_dir, "examples_obama_small.jpg")
    hits = site.search.SearchFace(search_pb2.SearchFaceRequest(communities=["c1"], image=image))
    assert hits.hits[0].person.person_id == "obama"
    with pytest.raises(grpc.RpcError) as err:
        site.search.SearchFace(search_pb2.SearchFaceRequest(communities=["c1", "c2"], image=image))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "reason" in (err.value.details() or "")
    site.search.SearchFace(
        search_pb2.SearchFaceRequest(communities=["c1", "c2"], image=image, reason="case 2026-17")
    )
    site.search.QueryEvents(events_pb2.QueryEventsRequest(community="c1", person_id="obama"))
    site.search.Trajectory(events_pb2.TrajectoryRequest(person_id="obama", reason="case 2026-17"))
    with pytest.raises(grpc.RpcError) as err:
        site.search.GetEventImage(events_pb2.GetEventImageRequest(community="c1", event_id="e1"))
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    site.registry.RemovePerson(
        registry_pb2.RemovePersonRequest(community="c1", person_id="obama", reason="moved out")
    )
    # Not audited: capture frames and plain listings.
    capture_pb2_grpc.CaptureStub(site.channel).Submit(
        capture_pb2.Frame(community="c1", gate="g", image=image), timeout=30
    )
    site.registry.ListCommunities(registry_pb2.ListCommunitiesRequest())

    assert site.node.audit is not None
    rows = [
        (r.actor, r.method, r.communities, r.target, r.reason, r.outcome)
        for r in site.node.audit.records()
    ]
    assert rows == [
        ("local:local", "EnrollPerson", ("c1",), "person:obama", "new resident", "OK"),
        ("local:local", "CreateCommunity", ("c2",), "", "", "OK"),
        ("local:local", "SearchFace", ("c1",), "", "", "OK"),
        ("local:local", "SearchFace", ("c1", "c2"), "", "", "INVALID_ARGUMENT"),
        ("local:local", "SearchFace", ("c1", "c2"), "", "case 2026-17", "OK"),
        ("local:local", "QueryEvents", ("c1",), "person:obama", "", "OK"),
        ("local:local", "Trajectory", ("*",), "person:obama", "case 2026-17", "OK"),
        ("local:local", "GetEventImage", ("c1",), "event:e1", "", "NOT_FOUND"),
        ("local:local", "RemovePerson", ("c1",), "person:obama", "moved out", "OK"),
    ]
    assert verify(site.data_dir).ok


def test_a_face_enrolled_as_someone_else_is_refused_unless_allowed(
    site: Site, faces_dir: Path
) -> None:
    _enroll(site, faces_dir, "a", "examples_obama.jpg")
    with pytest.raises(grpc.RpcError) as err:
        _enroll(site, faces_dir, "b", "examples_obama2.jpg")
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "'a'" in (err.value.details() or "")
    persons = site.registry.ListPersons(registry_pb2.ListPersonsRequest(community="c1")).persons
    assert [p.person_id for p in persons] == ["a"]
    # A different person is enrolled as usual; the same person re-enrolled (replace) too.
    _enroll(site, faces_dir, "biden", "examples_biden.jpg")
    _enroll(site, faces_dir, "a", "examples_obama2.jpg", replace=True)
    # Twins: the operator says so, and the audit log keeps it.
    _enroll(site, faces_dir, "b", "examples_obama2.jpg", allow_lookalike=True, reason="twin")
    assert site.node.audit is not None
    enrolments = [
        (r.target, r.outcome, r.detail) for r in site.node.audit.records(method="EnrollPerson")
    ]
    assert enrolments == [
        ("person:a", "OK", ""),
        ("person:b", "FAILED_PRECONDITION", ""),
        ("person:biden", "OK", ""),
        ("person:a", "OK", "replace"),
        ("person:b", "OK", "allow_lookalike"),
    ]


def test_erasure_everywhere_and_nothing_readable_at_rest(site: Site, faces_dir: Path) -> None:
    store, strangers = site.node.events.store, site.node.passages.strangers
    site.registry.CreateCommunity(registry_pb2.CreateCommunityRequest(community="c1"))
    # Seen as a stranger before enrolment, then enrolled (watch-listed) and seen again.
    _stream(site, faces_dir, "examples_obama2.jpg", "door-1")
    site.settle()
    assert [s.stranger_id for s in strangers.strangers("c1")] == ["s-1"]
    _enroll(site, faces_dir, PERSON, "examples_obama.jpg", role=common_pb2.ROLE_WATCHLIST)
    decisions = _stream(site, faces_dir, "examples_obama2.jpg", "door-2")
    assert capture_pb2.ACTION_ALERT in [d.action for d in decisions]
    site.settle()
    site.node.passages.save_strangers()

    events = store.query("c1")[0]
    assert {(e.person_id, e.stranger_id) for e in events} == {(None, "s-1"), (PERSON, None)}
    jpegs = [
        site.search.GetEventImage(
            events_pb2.GetEventImageRequest(community="c1", event_id=e.id)
        ).jpeg
        for e in events
    ]
    assert all(j.startswith(b"\xff\xd8\xff") for j in jpegs)
    streams = ("smartgate:c1:events", "smartgate:c1:alerts")
    entries: Any = [site.redis.xrange(s) for s in streams]
    sent = [str(fields) for stream in entries for _, fields in stream]
    assert any(PERSON in f for f in sent) and any("s-1" in f for f in sent)
    templates = site.node.engine.registry.person_embeddings("c1", PERSON)
    with site.node.engine.registry.store._reading() as con:
        sealed = [bytes(r[0]) for r in con.execute("SELECT embedding FROM templates")]

    # At rest: neither the embeddings (float32, float16, 16-byte windows) nor the best shots.
    at_rest = _embedding_needles(templates) + jpegs + [j[200:264] for j in jpegs]
    assert _files_with(site.data_dir, at_rest) == {}
    assert _files_with(site.data_dir, [PERSON.encode()])  # the scan does find what is there

    site.registry.RemovePerson(
        registry_pb2.RemovePersonRequest(community="c1", person_id=PERSON, reason="request 9")
    )
    assert site.node.events.publisher is not None and site.node.events.publisher.flush(10)

    # The index: their face finds nobody; the stranger they were is gone too.
    assert site.node.engine.registry.search("c1", templates[0], 5) == []
    assert site.node.engine.registry.indexed_templates("c1") == 0
    assert strangers.strangers("c1") == []
    # The events store, thumbnails and Redis: nothing of them.
    assert store.count_events("c1") == 0 and store.alerts_after("c1", 0) == []
    assert store.trajectory(person_id=PERSON) == [] and store.trajectory(stranger_id="s-1") == []
    assert list((store.thumbs_dir / "c1").iterdir()) == []
    assert [site.redis.xlen(s) for s in streams] == [0, 0]
    # Every byte of the data directory: no id, no template (sealed or not), no best shot. The
    # audit log keeps who removed whom (on purpose: it is the record of the erasure).
    needles = [PERSON.encode(), *at_rest, *(s[5:37] for s in sealed)]
    left = _files_with(site.data_dir, needles)
    assert left and all(f.startswith("audit.db") and hits == [0] for f, hits in left.items())
    assert [r.method for r in site.node.audit.records(method="RemovePerson")] == ["RemovePerson"]  # type: ignore[union-attr]
