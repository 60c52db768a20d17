"""cluster.gatestate: a gate's state round-trips through its serialisation, and a blob that
names any other callable is refused."""

from __future__ import annotations

import os
import pickle

import numpy as np
import pytest

from cluster.decide import Action
from cluster.gatestate import dumps, gate_key, loads
from cluster.passages import GateSnapshot, _Best
from cluster.tracking import GateTracker, Observation
from smartgate.config import TrackingConfig


def _face(x: float, seed: int) -> Observation:
    emb = np.random.default_rng(seed).normal(size=16).astype(np.float32)
    return Observation(
        kind="face",
        box=np.array([x, 10, x + 50, 70]),
        det_score=0.9,
        quality=0.8,
        size_px=50,
        embedding=emb,
        identity="p1",
        action=Action.OPEN,
        score=0.7,
    )


def test_a_gate_with_an_open_decided_passage_round_trips() -> None:
    tracker = GateTracker(TrackingConfig(), gate="door-1")
    out = [tracker.update(float(t), t, [_face(100 + t, 1)]) for t in range(3)]
    track = out[0].track_ids[0]
    assert track is not None
    snap = GateSnapshot(
        tracker,
        "cam-1",
        {track: 0.0},
        {track: Action.OPEN},
        {track: _Best(1.0, b"jpg", 0.9, None, "resident")},
    )
    back = loads(dumps(snap))
    assert isinstance(back, GateSnapshot)
    assert back.decided == {track: Action.OPEN} and back.best[track].thumbnail == b"jpg"
    # The restored tracker continues the same track and does not decide it again.
    again = back.tracker.update(3.0, 3, [_face(103, 1)])
    assert list(again.track_ids) == [track] and list(again.emits) == [None]


class _Evil:
    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, ("true",))


def test_a_blob_naming_another_callable_is_refused() -> None:
    with pytest.raises(pickle.UnpicklingError, match="may not contain"):
        loads(pickle.dumps(_Evil()))


def test_keys_name_community_and_gate() -> None:
    assert gate_key("c1", "door-1") == "smartgate:gate:c1:door-1"


def test_a_best_shot_is_encoded_once_when_needed_and_shared_as_jpeg() -> None:
    crop = np.full((120, 90, 3), 128, np.uint8)
    best = _Best(1.0, b"", 0.9, None, "resident", crop)
    back = loads(dumps(best))  # sharing the gate's state encodes it
    assert back.crop is None and back.thumbnail[:3] == b"\xff\xd8\xff"
    assert best.crop is None and best.thumbnail == back.thumbnail
    assert best.jpeg() is best.thumbnail  # not encoded again
    assert _Best(1.0, b"", None, None, None).jpeg() == b""  # no shot
    cut_by_a_worker = _Best(1.0, b"\xff\xd8\xffjpeg", None, None, None)
    assert cut_by_a_worker.jpeg() == b"\xff\xd8\xffjpeg"
