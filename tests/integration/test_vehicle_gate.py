"""Vehicle lanes over a real gRPC server: real plate models, real CCPD scenes and crops."""

from __future__ import annotations

import time
from pathlib import Path

import cv2
import grpc
import numpy as np
import pytest
from google.protobuf.timestamp_pb2 import Timestamp

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

VEHICLE = capture_pb2.LANE_KIND_VEHICLE
INVALID = grpc.StatusCode.INVALID_ARGUMENT.value[0]


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


def _add(registry, plate, role=common_pb2.ROLE_RESIDENT, community="v1", **kw):  # type: ignore[no-untyped-def]
    return registry.AddVehicle(
        registry_pb2.AddVehicleRequest(community=community, plate=plate, role=role, **kw)
    )


def _scene(plates_dir: Path, i: int) -> bytes:
    return (plates_dir / "scenes" / f"ccpd_{i:02d}.jpg").read_bytes()


def _frame(image: bytes, seq: int = 0, **kw) -> capture_pb2.Frame:  # type: ignore[no-untyped-def]
    return capture_pb2.Frame(
        community="v1", gate="barrier-1", seq=seq, image=image, lane=VEHICLE, **kw
    )


def test_resident_watchlist_visitor_and_stranger_vehicles(
    registry, capture, plates_dir: Path
) -> None:  # type: ignore[no-untyped-def]
    _add(registry, "皖A0N718", owner="unit 3-201")
    _add(registry, "皖A5P237", role=common_pb2.ROLE_WATCHLIST)
    _add(registry, "皖AZ576J", role=common_pb2.ROLE_VISITOR, expires_at=_ts(time.time() + 600))
    _add(registry, "皖AB112D", role=common_pb2.ROLE_VISITOR, expires_at=_ts(time.time() - 1))
    frames = [_frame(_scene(plates_dir, i), i) for i in range(5)]
    decisions = list(capture.Stream(iter(frames), timeout=60))
    actions = [capture_pb2.Action.Name(d.frame_action) for d in decisions]
    assert actions == [
        "ACTION_OPEN",
        "ACTION_ALERT",
        "ACTION_OPEN",
        "ACTION_STRANGER",
        "ACTION_STRANGER",
    ]
    first = decisions[0].plates[0]
    assert first.text == "皖A0N718" and first.valid and first.color == "blue"
    assert first.format == "standard" and first.score > 0.8
    assert first.match.vehicle.owner == "unit 3-201" and not first.match.fuzzy
    assert len(first.corners) == 4 and first.box.x2 > first.box.x1
    assert "expired" in decisions[3].reason
    assert "unknown vehicle 皖AG0S33" in decisions[4].reason
    assert not decisions[4].plates[0].HasField("match")
    assert decisions[0].timings_ms["plates"] > 0


def test_fuzzy_watchlist_match_alerts_and_is_flagged(registry, capture, plates_dir: Path) -> None:  # type: ignore[no-untyped-def]
    # Registered with a look-alike (Z for 2); the camera reads 皖A5P237.
    _add(registry, "皖A5PZ37", role=common_pb2.ROLE_WATCHLIST)
    d = capture.Submit(_frame(_scene(plates_dir, 1)))
    assert d.action == capture_pb2.ACTION_ALERT
    assert d.plates[0].match.fuzzy and 0 < d.plates[0].match.distance < 1
    assert "(fuzzy)" in d.reason


def test_camera_crop_is_read_directly(registry, capture, shared_data: Path) -> None:  # type: ignore[no-untyped-def]
    crops = shared_data / "plates" / "crops"
    _add(registry, "川X90621")
    blank = cv2.imencode(".jpg", np.full((720, 1280, 3), 60, np.uint8))[1].tobytes()
    d = capture.Submit(_frame(blank, plate_crop=(crops / "crop_000.jpg").read_bytes()))
    assert d.action == capture_pb2.ACTION_OPEN
    assert d.plates[0].from_camera_crop and d.plates[0].text == "川X90621"


def test_frames_without_plates_and_bad_crops_keep_the_stream(
    registry, capture, faces_dir: Path, plates_dir: Path
) -> None:  # type: ignore[no-untyped-def]
    _add(registry, "皖A0N718")
    face = (faces_dir / "examples_obama.jpg").read_bytes()
    noise = np.random.default_rng(0).integers(0, 255, (40, 120, 3), dtype=np.uint8)
    frames = [
        _frame(face, 1),  # no plate
        _frame(face, 2, plate_crop=cv2.imencode(".jpg", noise)[1].tobytes()),  # not a plate
        _frame(face, 3, plate_crop=b"\xff\xd8\xffbroken"),  # corrupt crop
        _frame(_scene(plates_dir, 0), 4),
    ]
    decisions = list(capture.Stream(iter(frames), timeout=60))
    assert [d.seq for d in decisions] == [1, 2, 3, 4]
    assert decisions[0].frame_action == capture_pb2.ACTION_NONE and not decisions[0].plates
    assert decisions[1].frame_action == capture_pb2.ACTION_NONE
    assert decisions[1].plates[0].score < 0.5 and decisions[1].plates[0].reason
    assert decisions[2].status.code == INVALID
    assert decisions[3].frame_action == capture_pb2.ACTION_OPEN


def test_vehicle_registry_and_plate_search(registry, channel, plates_dir: Path) -> None:  # type: ignore[no-untyped-def]
    _add(registry, "皖A0N718", community="v1")
    _add(registry, "皖A0N718", community="v2", role=common_pb2.ROLE_WATCHLIST)
    _add(registry, "皖AB112D", community="v2")
    with pytest.raises(grpc.RpcError) as err:
        _add(registry, "皖A0N718", community="v1")
    assert err.value.code() == grpc.StatusCode.ALREADY_EXISTS
    with pytest.raises(grpc.RpcError) as err:
        _add(registry, "皖A0N719", role=common_pb2.ROLE_VISITOR)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "expir" in err.value.details()
    listed = registry.ListVehicles(registry_pb2.ListVehiclesRequest(community="v2", page_size=1))
    assert len(listed.vehicles) == 1 and listed.next_page_token
    last = registry.ListVehicles(
        registry_pb2.ListVehiclesRequest(
            community="v2", page_size=1, page_token=listed.next_page_token
        )
    )
    assert len(last.vehicles) == 1 and not last.next_page_token  # a full last page ends it
    assert last.vehicles[0].plate != listed.vehicles[0].plate
    largest = registry.ListVehicles(
        registry_pb2.ListVehiclesRequest(community="v2", page_size=1000)
    )
    assert len(largest.vehicles) == 2 and not largest.next_page_token
    search = search_pb2_grpc.SearchStub(channel)
    exact = search.SearchPlate(
        search_pb2.SearchPlateRequest(communities=["v1", "v2"], plate="皖A0N718")
    )
    assert {(h.vehicle.community, h.distance) for h in exact.hits} == {("v1", 0.0), ("v2", 0.0)}
    fuzzy = search.SearchPlate(
        search_pb2.SearchPlateRequest(communities=["v2"], plate="皖A8112D", fuzzy=True)
    )
    assert fuzzy.hits[0].vehicle.plate == "皖AB112D" and fuzzy.hits[0].fuzzy
    with pytest.raises(grpc.RpcError) as err:
        search.SearchPlate(search_pb2.SearchPlateRequest(communities=["v9"], plate="皖A0N718"))
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    removed = registry.RemoveVehicle(
        registry_pb2.RemoveVehicleRequest(community="v1", plate="皖A0N718")
    )
    assert removed.plate == "皖A0N718"
    with pytest.raises(grpc.RpcError) as err:
        registry.RemoveVehicle(registry_pb2.RemoveVehicleRequest(community="v1", plate="皖A0N718"))
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
