"""Streaming one gate's frames to a Capture service in the tests: as fast as gRPC takes them,
paced at a frame rate, or in step (each frame once the previous one is answered)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator

from smartgate.v1 import capture_pb2, capture_pb2_grpc

ANSWER_WAIT_S = 60.0  # in step: how long to wait for a decision before ending the stream


def frames_of(
    images: list[bytes], gate: str, community: str = "c1", fps: float = 0.0
) -> Iterator[capture_pb2.Frame]:
    """One gate's frames, paced at ``fps`` (0: as fast as gRPC takes them)."""
    for i, img in enumerate(images):
        if fps:
            time.sleep(1.0 / fps)
        yield capture_pb2.Frame(
            community=community, gate=gate, device=f"cam-{gate}", seq=i, image=img
        )


def stream(
    capture: capture_pb2_grpc.CaptureStub,
    images: list[bytes],
    gate: str,
    community: str = "c1",
    fps: float = 0.0,
) -> list[capture_pb2.Decision]:
    return list(capture.Stream(frames_of(images, gate, community, fps), timeout=300))


def stream_in_step(
    capture: capture_pb2_grpc.CaptureStub,
    images: list[bytes],
    gate: str,
    community: str = "c1",
    before: Callable[[int, list[capture_pb2.Decision]], None] | None = None,
) -> list[capture_pb2.Decision]:
    """Each frame sent once the previous one's decision is back: a gate whose frames never
    queue, so what a frame may reuse from the frames before it does not depend on timing.
    ``before(i, decisions)`` runs before frame ``i`` is sent, with the decisions so far."""
    answered = threading.Semaphore(0)
    decisions: list[capture_pb2.Decision] = []

    def frames() -> Iterator[capture_pb2.Frame]:
        for i, frame in enumerate(frames_of(images, gate, community)):
            if i and not answered.acquire(timeout=ANSWER_WAIT_S):
                return
            if before is not None:
                before(i, decisions)
            yield frame

    for d in capture.Stream(frames(), timeout=300):
        decisions.append(d)
        answered.release()
    return decisions
