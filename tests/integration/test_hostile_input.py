"""Hostile input over a real gRPC server (real models, SQLite, FAISS, real photos).

Decompression bombs, truncated and malformed images, messages over the gRPC limit, malformed
protobuf, unicode and injection in ids and names. What ``test_capture_grpc.py`` covers already
(a few bad frames in one stream, one oversized Submit) is not repeated.
"""

from __future__ import annotations

import resource
import time
from pathlib import Path

import grpc
import pytest
from hostile_images import (
    jpeg_segments,
    png_bomb,
    png_chunks,
    png_zeros,
    with_app_segments,
    with_ihdr_size,
    with_sof_size,
)

from smartgate.v1 import (
    capture_pb2,
    capture_pb2_grpc,
    events_pb2,
    registry_pb2,
    registry_pb2_grpc,
    search_pb2_grpc,
)

pytestmark = pytest.mark.integration

OK = 0
INVALID = grpc.StatusCode.INVALID_ARGUMENT.value[0]


def _photo(faces_dir: Path, name: str) -> bytes:
    return (faces_dir / name).read_bytes()


def _frame(
    image: bytes, seq: int = 0, community: str = "c1", gate: str = "g1"
) -> capture_pb2.Frame:
    return capture_pb2.Frame(community=community, gate=gate, device="d1", seq=seq, image=image)


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@pytest.fixture
def registry(channel: grpc.Channel) -> registry_pb2_grpc.RegistryStub:
    return registry_pb2_grpc.RegistryStub(channel)


@pytest.fixture
def capture(channel: grpc.Channel) -> capture_pb2_grpc.CaptureStub:
    return capture_pb2_grpc.CaptureStub(channel)


@pytest.fixture
def enrolled(registry: registry_pb2_grpc.RegistryStub, faces_dir: Path) -> None:
    registry.EnrollPerson(
        registry_pb2.EnrollPersonRequest(
            community="c1",
            person_id="obama",
            name="Barack",
            images=[_photo(faces_dir, "examples_obama.jpg")],
        ),
        timeout=60,
    )


def _assert_obama_intact(registry, capture, faces_dir: Path) -> None:  # type: ignore[no-untyped-def]
    persons = registry.ListPersons(registry_pb2.ListPersonsRequest(community="c1")).persons
    assert [(p.person_id, p.name) for p in persons] == [("obama", "Barack")]
    d = capture.Submit(_frame(_photo(faces_dir, "examples_obama2.jpg"), 99), timeout=60)
    assert d.action == capture_pb2.ACTION_OPEN and d.faces[0].match.person_id == "obama"


# -- images ---------------------------------------------------------------------------------


def _bombs(faces_dir: Path) -> dict[str, tuple[bytes, str]]:
    """name -> (payload, words the refusal must say): headers that declare far more pixels
    than their bytes can hold, or more than the limits allow."""
    jpeg = _photo(faces_dir, "examples_obama_small.jpg")  # 33 KB
    png = _photo(faces_dir, "examples_alex-lacamoire.png")
    return {
        "jpeg-65500": (with_sof_size(jpeg, 65500, 65500), "declares 65500x65500"),
        "jpeg-40mpx-in-33kb": (with_sof_size(jpeg, 9990, 4000), "decompression bomb"),
        "png-ihdr-65500": (with_ihdr_size(png, 65500, 65500), "declares 65500x65500"),
        "png-ihdr-40mpx-in-200b": (with_ihdr_size(png_zeros(8, 8), 9000, 4400), "bomb"),
        "png-truncated-rgba-bomb": (png_bomb(6000, 6000, channels=4), "decompression bomb"),
        "png-zeros-144mpx": (png_zeros(12_000, 12_000), "declares 12000x12000"),
    }


def test_decompression_bombs_are_refused_without_allocating(  # type: ignore[no-untyped-def]
    capture, registry, enrolled, faces_dir: Path
) -> None:
    bombs = _bombs(faces_dir)
    before = _peak_rss_mb()
    for name, (payload, words) in bombs.items():
        with pytest.raises(grpc.RpcError) as err:
            capture.Submit(_frame(payload), timeout=10)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, name
        assert words in err.value.details(), (name, err.value.details())
    frames = [_frame(p, seq) for seq, (p, _) in enumerate(bombs.values())]
    decisions = list(capture.Stream(iter(frames), timeout=30))
    assert [d.status.code for d in decisions] == [INVALID] * len(bombs)
    # One 40 Mpixel BGR buffer alone would be 120 MB (the server runs in this process).
    assert _peak_rss_mb() - before < 64
    with pytest.raises(grpc.RpcError) as err:
        registry.EnrollPerson(
            registry_pb2.EnrollPersonRequest(
                community="c1", person_id="bomb", images=[bombs["png-zeros-144mpx"][0]]
            ),
            timeout=10,
        )
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "image 1" in err.value.details()
    _assert_obama_intact(registry, capture, faces_dir)


def _truncations(faces_dir: Path) -> dict[str, bytes]:
    """A real JPEG cut at each kind of marker and a real PNG cut at each kind of chunk."""
    jpeg = _photo(faces_dir, "examples_obama2.jpg")
    png = _photo(faces_dir, "examples_alex-lacamoire.png")
    out = {}
    for pos, marker in jpeg_segments(jpeg):
        out.setdefault(f"jpeg-before-{marker:02X}", jpeg[:pos])
        out.setdefault(f"jpeg-inside-{marker:02X}", jpeg[: pos + 5])
    out["jpeg-mid-scan"] = jpeg[: len(jpeg) * 2 // 3]
    out["jpeg-without-eoi"] = jpeg[:-2]
    for pos, kind, _ in png_chunks(png):
        out.setdefault(f"png-before-{kind.decode()}", png[:pos])
        out.setdefault(f"png-inside-{kind.decode()}", png[: pos + 10])
    out["png-without-iend"] = png[:-12]
    broken_crc = bytearray(png)
    broken_crc[30] ^= 0xFF
    out["png-ihdr-crc"] = bytes(broken_crc)
    return out


def test_truncated_and_malformed_frames_keep_the_stream_going(  # type: ignore[no-untyped-def]
    capture, registry, enrolled, faces_dir: Path
) -> None:
    probe = _photo(faces_dir, "examples_obama2.jpg")
    bad = _truncations(faces_dir)
    bad["icc-chain-of-255"] = with_app_segments(
        probe, 0xE2, b"ICC_PROFILE\x00\x01\xff" + b"x" * 100, 1
    )
    assert len(bad) >= 20
    good = {"app1-segments-9mb": with_app_segments(probe, 0xE1, b"\xff" * 65533, 150)}
    payloads = [*bad.values(), *good.values(), probe]
    frames = [_frame(p, seq) for seq, p in enumerate(payloads)]
    decisions = list(capture.Stream(iter(frames), timeout=120))
    assert [d.seq for d in decisions] == list(range(len(payloads)))
    for name, d in zip(bad, decisions, strict=False):
        assert d.status.code == INVALID, (name, d.status)
        assert d.status.message, name
    for name, d in zip(good, decisions[len(bad) :], strict=False):
        assert d.status.code == OK and d.frame_action == capture_pb2.ACTION_OPEN, name
    assert decisions[-1].status.code == OK
    _assert_obama_intact(registry, capture, faces_dir)


# -- messages -------------------------------------------------------------------------------


def test_messages_over_the_grpc_limit_are_refused_and_the_server_serves_on(  # type: ignore[no-untyped-def]
    capture, registry, enrolled, faces_dir: Path
) -> None:
    huge = b"\xff\xd8\xff" + b"\x00" * (17 * 1024 * 1024)
    probe = _photo(faces_dir, "examples_obama2.jpg")
    with pytest.raises(grpc.RpcError) as err:
        list(capture.Stream(iter([_frame(probe, 1), _frame(huge, 2)]), timeout=60))
    assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    with pytest.raises(grpc.RpcError) as err:
        registry.EnrollPerson(
            registry_pb2.EnrollPersonRequest(
                community="c1", person_id="big", images=[b"\xff\xd8\xff" + b"\x00" * 6_000_000] * 3
            ),
            timeout=60,
        )
    assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    _assert_obama_intact(registry, capture, faces_dir)


def test_malformed_protobuf_is_invalid_argument_not_internal(  # type: ignore[no-untyped-def]
    channel, capture, registry, enrolled, faces_dir: Path
) -> None:
    raw = {"request_serializer": None, "response_deserializer": None}
    create = channel.unary_unary("/smartgate.v1.Registry/CreateCommunity", **raw)
    for payload in (b"\x0a\x02\xff\xfe", b"\x0a\x05c1", b"\x0f", b"\x12\x80"):
        with pytest.raises(grpc.RpcError) as err:
            create(payload, timeout=10)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, payload
        assert "smartgate.v1.CreateCommunityRequest" in err.value.details()
    stream = channel.stream_stream("/smartgate.v1.Capture/Stream", **raw)
    good = _frame(_photo(faces_dir, "examples_obama2.jpg"), 1).SerializeToString()
    replies = []
    with pytest.raises(grpc.RpcError) as err:
        for reply in stream(iter([good, b"\x0a\x03\xc3\x28x", good]), timeout=60):
            replies.append(capture_pb2.Decision.FromString(reply))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "smartgate.v1.Frame" in err.value.details()
    assert [d.seq for d in replies] == [1] and replies[0].frame_action == capture_pb2.ACTION_OPEN
    _assert_obama_intact(registry, capture, faces_dir)


# -- ids and names --------------------------------------------------------------------------

STORED_IDS = (
    "小区-一号楼",
    "Ünïcödé",
    "שלום",
    "😀",
    "'; DROP TABLE persons; --",
    "Robert'); DELETE FROM templates;--",
    "$(reboot)",
    "`id`",
    "../../etc/passwd",
    "%s%n{0}",
    "a" * 128,
)
REFUSED_IDS = {
    "": "must not be empty",
    "   ": "must not be empty",
    " lead": "white space",
    "trail ": "white space",
    "a\x00b": "non-printable",
    "tab\there": "non-printable",
    "\u202eevil": "non-printable",
    "a\u200fb": "non-printable",
    "👨\u200d👩\u200d👧": "non-printable",
    "\ufeffbom": "non-printable",
    "e\u0301": "NFC",
    "a" * 129: "at most 128",
    "x" * 100_000: "at most 128",
}
STORED_NAMES = ("Li Lei 李雷", "O'Brien", "<script>alert(1)</script>", "  spaced  ", "", "n" * 256)
REFUSED_NAMES = {"a\x00b": "non-printable", "\u202e": "non-printable", "n" * 257: "at most 256"}


def _enroll(registry, community: str, person: str, image: bytes, name: str = "") -> None:  # type: ignore[no-untyped-def]
    registry.EnrollPerson(
        registry_pb2.EnrollPersonRequest(
            community=community, person_id=person, name=name, images=[image], replace=True
        ),
        timeout=60,
    )


def test_ids_are_stored_exactly_or_refused(  # type: ignore[no-untyped-def]
    capture, registry, enrolled, faces_dir: Path
) -> None:
    face = _photo(faces_dir, "examples_obama_small.jpg")
    probe = _photo(faces_dir, "examples_obama2.jpg")
    for value in STORED_IDS:
        _enroll(registry, value, value, face)
        persons = registry.ListPersons(registry_pb2.ListPersonsRequest(community=value)).persons
        assert [p.person_id for p in persons] == [value]
        d = capture.Submit(_frame(probe, community=value), timeout=60)
        assert d.faces[0].match.person_id == value and d.community == value
    for value, words in REFUSED_IDS.items():
        for community, person in ((value, "p1"), ("c1", value)):
            with pytest.raises(grpc.RpcError) as err:
                _enroll(registry, community, person, face)
            assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, repr(value[:20])
            assert words in err.value.details(), (repr(value[:20]), err.value.details())
    listed = registry.ListCommunities(registry_pb2.ListCommunitiesRequest()).communities
    assert sorted(listed) == sorted(["c1", *STORED_IDS])
    for value in STORED_IDS:  # removal by an exotic id removes that row only
        registry.RemovePerson(registry_pb2.RemovePersonRequest(community=value, person_id=value))
    _assert_obama_intact(registry, capture, faces_dir)


def test_names_are_stored_exactly_or_refused(  # type: ignore[no-untyped-def]
    capture, registry, enrolled, faces_dir: Path
) -> None:
    face = _photo(faces_dir, "examples_obama_small.jpg")
    request = registry_pb2.ListPersonsRequest(community="names")
    for name in STORED_NAMES:
        _enroll(registry, "names", "p", face, name)
        assert [p.name for p in registry.ListPersons(request).persons] == [name]
    for name, words in REFUSED_NAMES.items():
        with pytest.raises(grpc.RpcError) as err:
            _enroll(registry, "names", "p", face, name)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert words in err.value.details()
    assert [p.name for p in registry.ListPersons(request).persons] == [STORED_NAMES[-1]]
    _assert_obama_intact(registry, capture, faces_dir)


def test_gate_and_device_ids_are_checked_before_recognition(  # type: ignore[no-untyped-def]
    node, channel, capture, registry, enrolled, faces_dir: Path
) -> None:
    probe = _photo(faces_dir, "examples_obama2.jpg")
    for gate in ("", "a\x00b", "\u202egate", "g" * 129):
        with pytest.raises(grpc.RpcError) as err:
            capture.Submit(_frame(probe, gate=gate), timeout=30)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "gate" in err.value.details()
    bad_device = capture_pb2.Frame(community="c1", gate="g1", device="cam\x00", image=probe)
    with pytest.raises(grpc.RpcError) as err:
        capture.Submit(bad_device, timeout=30)
    assert "device" in err.value.details()
    gates = ("东门-1", "'; DROP TABLE events; --")
    for gate in gates:
        assert (
            capture.Submit(_frame(probe, gate=gate), timeout=60).action == capture_pb2.ACTION_OPEN
        )
    assert node.events.writer.flush(timeout=30)
    assert node.events.writer.stats.failed == 0
    search = search_pb2_grpc.SearchStub(channel)
    for gate in gates:
        deadline = time.monotonic() + 10
        events = []
        while not events and time.monotonic() < deadline:
            request = events_pb2.QueryEventsRequest(community="c1", gate=gate)
            events = list(search.QueryEvents(request, timeout=10).events)
        assert [e.gate for e in events] == [gate]
