"""``benchmarks.peer``: the frames, both harnesses and the peer's accuracy protocol, kept small.

Skipped where the peer library is not installed (see the install line in benchmarks/peer.py).
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import cv2
import numpy as np
import pytest

from benchmarks import peer
from benchmarks.datasets import face_labels

pytestmark = [pytest.mark.integration, pytest.mark.peer]


@pytest.fixture(scope="module", autouse=True)
def _peer_installed() -> None:
    """Selected only by `make bench-peer`, which installs the peer first; fail loudly if not."""
    try:
        peer.import_peer()
    except ImportError as exc:
        pytest.fail(str(exc))


@pytest.fixture(scope="module")
def frames(shared_data: Path) -> list[bytes]:
    return peer.build_frames(shared_data, len(peer.FRAME_SOURCES))


def test_frames_are_1080p_jpegs_with_one_face_for_both_sides(  # type: ignore[no-untyped-def]
    frames: list[bytes], face_analyzer, base_config
) -> None:
    for data in frames:
        image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
        assert image.shape == (1080, 1920, 3)
    ours = peer.smartgate_threads(
        face_analyzer, base_config.detect.long_side, frames, 2, len(frames), "smartgate"
    )
    assert ours.faces == Counter({1: len(frames)})
    assert ours.frames == len(frames)
    assert ours.fps > 0


def test_peer_pool_times_every_frame(frames: list[bytes]) -> None:
    best = peer.peer_pool(frames, 0, 2, "peer best")
    assert best.faces == Counter({1: len(frames)})
    assert best.fps > 0


def test_peer_accuracy_follows_the_face_accuracy_protocol(shared_data: Path) -> None:
    acc = peer.peer_accuracy(shared_data, 0)
    labels = face_labels(shared_data)
    found = len(labels) - len(acc.missing_labels)
    assert acc.open_set_trials == found  # every found labelled face, each identity left out
    assert 20 <= acc.probes < found  # gallery photos and their re-encodings are no probes
    assert 0 <= acc.rank1_correct <= acc.probes


def test_table_has_one_row_per_system() -> None:
    speed = peer.Throughput("x", 10, 2.0, Counter({1: 10}))
    rows = [peer.Row("a", speed, "9/10 = 90.0 %", "0 of 5", "1 of 2", 0)] * 2
    text = peer.table(rows)
    assert text.count("\n| a | 5.00 | 10× 1 | 9/10 = 90.0 % | 0 of 5 | 1 of 2 | 0 |") == 2
