"""The fuzz targets: the image decoder in process, and every RPC through a real gRPC server."""

from __future__ import annotations

import resource
import time
from pathlib import Path

import grpc
from fuzz_grpc import SENTINEL_COMMUNITY, SENTINEL_PERSON, call_raw, requests, split
from fuzz_images import image_payloads
from harness import Target

from cluster.node import Node
from recognizer.image import DecodeLimits, decode
from smartgate.errors import DecodeError
from smartgate.v1 import capture_pb2, capture_pb2_grpc, registry_pb2, registry_pb2_grpc

LIMITS = DecodeLimits()
DETECT_LONG_SIDE = 640
# A decode may take what the limits admit (40 Mpixel as 16-bit RGBA, then as 8-bit BGR), and no
# more; nor longer than this (a real 40 Mpixel JPEG decodes in well under a second).
MAX_DECODE_GROWTH_BYTES = LIMITS.max_pixels * (4 * 2 + 3) * 2
MAX_DECODE_SECONDS = 5.0


def _max_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def check_decode(data: bytes) -> None:
    """``decode`` either returns a consistent image or raises DecodeError, quickly and within
    the memory the limits admit; anything else raises AssertionError (or escapes)."""
    rss0, t0 = _max_rss_bytes(), time.perf_counter()
    try:
        image = decode(data, LIMITS, DETECT_LONG_SIDE)
        full = image.full()
    except DecodeError:
        pass
    else:
        expected = (image.height, image.width, 3)
        assert full.shape == expected, f"full image {full.shape}, header says {expected}"
        assert image.scaled.ndim == 3 and image.scaled.shape[2] == 3
        assert str(image.scaled.dtype) == "uint8" and str(full.dtype) == "uint8"
        assert 0 < image.scale <= 1.0
    elapsed = time.perf_counter() - t0
    grown = _max_rss_bytes() - rss0
    assert elapsed < MAX_DECODE_SECONDS, f"decoding took {elapsed:.1f} s"
    assert grown < MAX_DECODE_GROWTH_BYTES, f"decoding grew the peak RSS by {grown >> 20} MB"


def decode_target() -> Target:
    return Target("decode", image_payloads(), check_decode)


def grpc_target(channel: grpc.Channel) -> Target:
    """Every RPC on the server behind ``channel``: no INTERNAL, no hang, no dead server."""

    def check(data: bytes) -> None:
        method, payload = split(data)
        assert method is not None, f"unknown method in {data[:80]!r}"
        problems = call_raw(channel, method, payload)
        assert not problems, "; ".join(problems)

    return Target("grpc", requests(), check)


def plant_sentinel(channel: grpc.Channel, photo: bytes) -> None:
    """Enrol the person the fuzzer must leave alone (in a community it never names)."""
    registry_pb2_grpc.RegistryStub(channel).EnrollPerson(
        registry_pb2.EnrollPersonRequest(
            community=SENTINEL_COMMUNITY,
            person_id=SENTINEL_PERSON,
            name="Keeper 守门人",
            images=[photo],
            replace=True,
        ),
        timeout=60,
    )
    registry_pb2_grpc.RegistryStub(channel).CreateCommunity(
        registry_pb2.CreateCommunityRequest(community="fz"), timeout=10
    )


def check_sentinel(channel: grpc.Channel, probe: bytes) -> None:
    """The server still answers, and the sentinel is listed and recognised as before."""
    persons = (
        registry_pb2_grpc.RegistryStub(channel)
        .ListPersons(registry_pb2.ListPersonsRequest(community=SENTINEL_COMMUNITY), timeout=30)
        .persons
    )
    assert [(p.person_id, p.name) for p in persons] == [(SENTINEL_PERSON, "Keeper 守门人")]
    decision = capture_pb2_grpc.CaptureStub(channel).Submit(
        capture_pb2.Frame(community=SENTINEL_COMMUNITY, gate="g1", seq=1, image=probe),
        timeout=60,
    )
    assert decision.faces and decision.faces[0].match.person_id == SENTINEL_PERSON
    assert decision.faces[0].match.accepted


def check_no_event_lost(node: Node) -> None:
    """Every passage the fuzzed frames opened was stored: none refused by the event log."""
    node.passages.expire(time.time() + 3600)
    assert node.events.writer.flush(timeout=30)
    stats = node.events.writer.stats
    assert stats.failed == 0, f"{stats.failed} events not stored: {stats.last_error}"


def photo(faces_dir: Path, name: str) -> bytes:
    return (faces_dir / name).read_bytes()
