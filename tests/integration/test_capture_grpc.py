"""Capture, registry and search over a real gRPC server with real models and real photos."""

from __future__ import annotations

import time
from pathlib import Path

import cv2
import grpc
import numpy as np
import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from grpc_health.v1 import health_pb2, health_pb2_grpc

from smartgate.v1 import (
    capture_pb2,
    capture_pb2_grpc,
    common_pb2,
    registry_pb2,
    registry_pb2_grpc,
    search_pb2,
    search_pb2_grpc,
)

pytestmark = pytest.mark.integration

INVALID = grpc.StatusCode.INVALID_ARGUMENT.value[0]
NOT_FOUND = grpc.StatusCode.NOT_FOUND.value[0]


def _photo(faces_dir: Path, name: str) -> bytes:
    return (faces_dir / name).read_bytes()


def _blank_jpeg() -> bytes:
    ok, buf = cv2.imencode(".jpg", np.full((480, 640, 3), 90, np.uint8))
    assert ok
    return buf.tobytes()


def _ts(seconds: float) -> Timestamp:
    ts = Timestamp()
    ts.FromNanoseconds(int(seconds * 1e9))
    return ts


@pytest.fixture
def registry(channel: grpc.Channel) -> registry_pb2_grpc.RegistryStub:
    return registry_pb2_grpc.RegistryStub(channel)


@pytest.fixture
def capture(channel: grpc.Channel) -> capture_pb2_grpc.CaptureStub:
    return capture_pb2_grpc.CaptureStub(channel)


def _enroll(registry, community, person, images, role=common_pb2.ROLE_RESIDENT, **kw):  # type: ignore[no-untyped-def]
    return registry.EnrollPerson(
        registry_pb2.EnrollPersonRequest(
            community=community, person_id=person, role=role, images=images, **kw
        ),
        timeout=30,
    )


@pytest.fixture
def enrolled(registry, faces_dir: Path) -> None:  # type: ignore[no-untyped-def]
    _enroll(registry, "c1", "obama", [_photo(faces_dir, "examples_obama.jpg")], name="Barack")


def _frame(image: bytes, seq: int = 0, community: str = "c1") -> capture_pb2.Frame:
    return capture_pb2.Frame(community=community, gate="g1", device="d1", seq=seq, image=image)


def test_resident_opens_and_stranger_is_recorded(capture, enrolled, faces_dir: Path) -> None:  # type: ignore[no-untyped-def]
    d = capture.Submit(_frame(_photo(faces_dir, "examples_obama2.jpg"), 7), timeout=30)
    assert d.action == capture_pb2.ACTION_OPEN
    assert d.seq == 7 and d.gate == "g1"
    assert len(d.faces) >= 1
    assert d.faces[0].match.person_id == "obama" and d.faces[0].match.accepted
    assert d.faces[0].match.name == "Barack"
    assert len(d.faces[0].landmarks) == 5
    assert 0.0 <= d.faces[0].liveness <= 1.0
    for stage in ("decode", "detect", "align", "embed", "match", "total"):
        assert d.timings_ms[stage] >= 0.0
    d = capture.Submit(_frame(_photo(faces_dir, "examples_biden.jpg")), timeout=30)
    assert d.action == capture_pb2.ACTION_STRANGER
    assert not d.faces[0].match.accepted


def test_stream_answers_every_frame_in_order_and_survives_bad_ones(  # type: ignore[no-untyped-def]
    node, capture, enrolled, faces_dir: Path
) -> None:
    big = _photo(faces_dir, "examples_obama-1080p.jpg")
    frames = [
        _frame(big, 1),
        _frame(b"not an image at all", 2),
        _frame(big[: len(big) // 3], 3),
        _frame(b"", 4),
        _frame(_blank_jpeg(), 5),
        _frame(big, 6, community="nowhere"),
        _frame(_photo(faces_dir, "examples_biden.jpg"), 7),
        _frame(b"\x89PNG\r\n\x1a\n" + b"\x00" * 64, 8),
        _frame(big, 9),
    ]
    decisions = list(capture.Stream(iter(frames), timeout=60))
    assert [d.seq for d in decisions] == list(range(1, 10))
    by_seq = {d.seq: d for d in decisions}
    # Per frame: the verdict on the frame alone. Per passage: frames 1 and 9 are the same
    # person at the same gate, one track, decided on its second recognisable frame.
    assert by_seq[1].frame_action == capture_pb2.ACTION_OPEN
    assert by_seq[1].action == capture_pb2.ACTION_NONE
    for seq, text in ((2, "neither JPEG nor PNG"), (3, "truncated"), (4, "empty"), (8, "PNG")):
        assert by_seq[seq].status.code == INVALID, seq
        assert text in by_seq[seq].status.message
    assert by_seq[5].frame_action == capture_pb2.ACTION_NONE and by_seq[5].status.code == 0
    assert by_seq[6].status.code == NOT_FOUND and "nowhere" in by_seq[6].status.message
    assert by_seq[7].frame_action == capture_pb2.ACTION_STRANGER
    assert by_seq[9].action == capture_pb2.ACTION_OPEN
    assert by_seq[9].tracks[0].decided_now
    assert by_seq[9].tracks[0].track_id == by_seq[1].tracks[0].track_id
    # Every frame answered was observed or, failed, let go: none holds the gate's passages open.
    assert node.passages.frames_in_flight() == 0


def test_unary_errors_carry_the_right_status(capture, enrolled, faces_dir: Path) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(grpc.RpcError) as err:
        capture.Submit(_frame(_photo(faces_dir, "examples_obama.jpg"), community="nope"))
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    assert "community 'nope' does not exist" in err.value.details()
    with pytest.raises(grpc.RpcError) as err:
        capture.Submit(_frame(b"\xff\xd8\xff\xe0garbage"))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(grpc.RpcError) as err:
        capture.Submit(_frame(b"\xff\xd8\xff" + b"\x00" * (13 * 1024 * 1024)))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "bytes; the limit is" in err.value.details()


def test_message_larger_than_the_grpc_limit_is_refused(capture, enrolled) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(grpc.RpcError) as err:
        capture.Submit(_frame(b"\xff\xd8\xff" + b"\x00" * (17 * 1024 * 1024)), timeout=30)
    assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


def test_watchlist_alerts_and_visitor_expiry(capture, registry, enrolled, faces_dir: Path) -> None:  # type: ignore[no-untyped-def]
    _enroll(
        registry,
        "c1",
        "biden",
        [_photo(faces_dir, "examples_biden.jpg")],
        role=common_pb2.ROLE_WATCHLIST,
    )
    d = capture.Submit(_frame(_photo(faces_dir, "examples_knn_examples_train_biden_biden2.jpg")))
    assert d.action == capture_pb2.ACTION_ALERT
    # A frame with a resident and a watch-listed person alerts.
    d = capture.Submit(_frame(_photo(faces_dir, "examples_two_people.jpg")))
    assert d.action == capture_pb2.ACTION_ALERT
    kit = _photo(faces_dir, "examples_knn_examples_train_kit_harington_john1.jpeg")
    kit_probe = _photo(faces_dir, "examples_knn_examples_train_kit_harington_john2.jpeg")
    _enroll(
        registry,
        "c1",
        "kit",
        [kit],
        role=common_pb2.ROLE_VISITOR,
        expires_at=_ts(time.time() + 3600),
    )
    assert capture.Submit(_frame(kit_probe)).action == capture_pb2.ACTION_OPEN
    _enroll(
        registry,
        "c1",
        "kit",
        [kit],
        role=common_pb2.ROLE_VISITOR,
        expires_at=_ts(time.time() - 1),
        replace=True,
    )
    d = capture.Submit(_frame(kit_probe))
    assert d.action == capture_pb2.ACTION_STRANGER
    assert "expired" in d.reason


@pytest.mark.parametrize(
    ("images", "role", "message"),
    [
        ("blank", common_pb2.ROLE_RESIDENT, "image 1: no face found"),
        ("two", common_pb2.ROLE_RESIDENT, "image 1: 2 faces found"),
        ("corrupt", common_pb2.ROLE_RESIDENT, "image 2: "),
        ("none", common_pb2.ROLE_RESIDENT, "at least one image"),
        ("good", common_pb2.ROLE_VISITOR, "expiry"),
    ],
)
def test_bad_enrolments_are_refused_and_change_nothing(  # type: ignore[no-untyped-def]
    registry, enrolled, faces_dir: Path, images: str, role: int, message: str
) -> None:
    good = _photo(faces_dir, "examples_biden.jpg")
    payload = {
        "blank": [_blank_jpeg()],
        "two": [_photo(faces_dir, "examples_two_people.jpg")],
        "corrupt": [good, good[:500]],
        "none": [],
        "good": [good],
    }[images]
    with pytest.raises(grpc.RpcError) as err:
        _enroll(registry, "c1", "newcomer", payload, role=role)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert message in err.value.details()
    persons = registry.ListPersons(registry_pb2.ListPersonsRequest(community="c1")).persons
    assert [p.person_id for p in persons] == ["obama"]


def test_duplicate_enrolment_needs_replace(registry, enrolled, faces_dir: Path) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(grpc.RpcError) as err:
        _enroll(registry, "c1", "obama", [_photo(faces_dir, "examples_obama2.jpg")])
    assert err.value.code() == grpc.StatusCode.ALREADY_EXISTS
    reply = _enroll(
        registry,
        "c1",
        "obama",
        [_photo(faces_dir, "examples_obama2.jpg"), _photo(faces_dir, "examples_obama.jpg")],
        replace=True,
    )
    assert reply.person.template_count == 2


def test_removal_erases_every_template(capture, registry, enrolled, faces_dir: Path) -> None:  # type: ignore[no-untyped-def]
    reply = registry.RemovePerson(
        registry_pb2.RemovePersonRequest(community="c1", person_id="obama")
    )
    assert reply.templates_removed == 1
    d = capture.Submit(_frame(_photo(faces_dir, "examples_obama2.jpg")))
    assert d.action == capture_pb2.ACTION_STRANGER
    assert not d.faces[0].HasField("match")
    with pytest.raises(grpc.RpcError) as err:
        registry.RemovePerson(registry_pb2.RemovePersonRequest(community="c1", person_id="obama"))
    assert err.value.code() == grpc.StatusCode.NOT_FOUND


def test_communities_are_created_explicitly_or_by_first_enrolment(
    registry, capture, enrolled, faces_dir: Path
) -> None:  # type: ignore[no-untyped-def]
    created = registry.CreateCommunity(registry_pb2.CreateCommunityRequest(community="c2"))
    assert created.created
    again = registry.CreateCommunity(registry_pb2.CreateCommunityRequest(community="c2"))
    assert not again.created
    listed = registry.ListCommunities(registry_pb2.ListCommunitiesRequest()).communities
    assert set(listed) == {"c1", "c2"}
    # An empty community answers frames (with STRANGER) rather than NOT_FOUND.
    d = capture.Submit(_frame(_photo(faces_dir, "examples_obama2.jpg"), community="c2"))
    assert d.action == capture_pb2.ACTION_STRANGER
    with pytest.raises(grpc.RpcError) as err:
        registry.CreateCommunity(registry_pb2.CreateCommunityRequest(community="bad\x00id"))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_search_face_across_communities(channel, registry, enrolled, faces_dir: Path) -> None:  # type: ignore[no-untyped-def]
    _enroll(registry, "c2", "barack", [_photo(faces_dir, "examples_obama2.jpg")])
    _enroll(registry, "c2", "biden", [_photo(faces_dir, "examples_biden.jpg")])
    search = search_pb2_grpc.SearchStub(channel)
    reply = search.SearchFace(
        search_pb2.SearchFaceRequest(
            communities=["c1", "c2"],
            image=_photo(faces_dir, "examples_obama_small.jpg"),
            top_k=3,
            reason="test: search across communities",  # required, audited
        )
    )
    top = [(h.person.community, h.person.person_id) for h in reply.hits]
    assert set(top[:2]) == {("c1", "obama"), ("c2", "barack")}
    assert reply.hits[0].score >= reply.hits[-1].score
    with pytest.raises(grpc.RpcError) as err:
        search.SearchFace(search_pb2.SearchFaceRequest(communities=["c9"], image=b"x"))
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.RpcError) as err:
        search.SearchFace(search_pb2.SearchFaceRequest(communities=["c1"], image=_blank_jpeg()))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_state_survives_a_restart(engine, registry, enrolled, faces_dir: Path) -> None:  # type: ignore[no-untyped-def]
    from cluster.engine import Engine
    from indexer.registry import FaceRegistry

    restarted = Engine(
        engine.config,
        engine.analyzer,
        FaceRegistry(engine.config.data_dir, engine.analyzer.embedder.dim),
    )
    result = restarted.process_frame("c1", _photo(faces_dir, "examples_obama2.jpg"))
    assert result.action.name == "OPEN"


def test_health_and_reflection(channel) -> None:  # type: ignore[no-untyped-def]
    health = health_pb2_grpc.HealthStub(channel)
    for service in ("", "smartgate.v1.Capture"):
        reply = health.Check(health_pb2.HealthCheckRequest(service=service))
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    replies = stub.ServerReflectionInfo(
        iter([reflection_pb2.ServerReflectionRequest(list_services="")])
    )
    names = {s.name for r in replies for s in r.list_services_response.service}
    assert {"smartgate.v1.Capture", "smartgate.v1.Registry", "smartgate.v1.Search"} <= names


def test_a_cold_node_is_not_serving_until_ready(node) -> None:  # type: ignore[no-untyped-def]
    from cluster.server import start_server

    running = start_server(None, node.config.server)
    try:
        with grpc.insecure_channel(running.address) as ch:
            health = health_pb2_grpc.HealthStub(ch)
            status = health.Check(health_pb2.HealthCheckRequest(service="")).status
            assert status == health_pb2.HealthCheckResponse.NOT_SERVING
            with pytest.raises(grpc.RpcError) as err:
                capture_pb2_grpc.CaptureStub(ch).Submit(_frame(b"x"))
            assert err.value.code() == grpc.StatusCode.UNAVAILABLE
            running.ready(node)
            status = health.Check(health_pb2.HealthCheckRequest(service="")).status
            assert status == health_pb2.HealthCheckResponse.SERVING
    finally:
        running.stop(0)


def test_metrics_endpoint_reports_latency_per_gate_and_shed_frames(  # type: ignore[no-untyped-def]
    node, capture, enrolled, faces_dir: Path
) -> None:
    import urllib.request

    port = node.metrics.serve("127.0.0.1:0")
    capture.Submit(_frame(_photo(faces_dir, "examples_obama2.jpg")))
    with pytest.raises(grpc.RpcError):
        capture.Submit(_frame(b"junk"))
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as reply:
        text = reply.read().decode()
    assert 'smartgate_capture_latency_seconds_count{gate="g1"} 1.0' in text
    assert 'smartgate_stage_seconds_count{stage="detect"}' in text
    assert 'smartgate_frames_failed_total{code="INVALID_ARGUMENT",gate="g1"} 1.0' in text
    assert "smartgate_models_ready 1.0" in text
    assert "smartgate_queue_frames" in text
