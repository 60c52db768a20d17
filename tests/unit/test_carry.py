"""recognizer.faces.carry: which faces of a new frame may reuse a decided face's embedding."""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from recognizer.faces.carry import (
    Carried,
    CarryLedger,
    CarryOffer,
    CarryPolicy,
    View,
    assign,
    detection_region,
    iou_matrix,
    merge_view,
    region_misses,
)
from recognizer.faces.detector import snap_region


def _carried(box: list[float], t: float = 10.0, seed: int = 0) -> Carried:
    rng = np.random.default_rng(seed)
    emb = rng.normal(size=8).astype(np.float32)
    return Carried(np.array(box, dtype=np.float64), emb / np.linalg.norm(emb), 0.9, seed, t)


POLICY = CarryPolicy(max_carry=3, iou_min=0.6, max_age_s=0.5)


def test_iou_matrix_matches_hand_computed_values() -> None:
    a = np.array([[0, 0, 10, 10], [100, 100, 110, 110]], dtype=np.float64)
    b = np.array([[0, 0, 10, 10], [5, 0, 15, 10], [0, 0, 0, 0]], dtype=np.float64)
    np.testing.assert_allclose(
        iou_matrix(a, b), [[1.0, 50 / 150, 0.0], [0.0, 0.0, 0.0]], rtol=1e-12
    )


def test_a_face_in_the_same_place_reuses_the_decided_face() -> None:
    previous = _carried([100, 100, 200, 220])
    boxes = np.array([[104, 102, 204, 222], [600, 100, 700, 220]], dtype=np.float64)
    out = assign(boxes, [previous], 10.2, POLICY)
    assert out[0] is previous and out[1] is None


def test_assignment_is_one_to_one_by_highest_overlap() -> None:
    a, b = _carried([0, 0, 100, 100], seed=1), _carried([300, 0, 400, 100], seed=2)
    boxes = np.array([[302, 0, 402, 100], [1, 0, 101, 100], [0, 2, 100, 102]], dtype=np.float64)
    out = assign(boxes, [a, b], 10.0, POLICY)
    assert out[0] is b and out[1] is a and out[2] is None


def test_limits_end_carrying() -> None:
    box = np.array([[100, 100, 200, 220]], dtype=np.float64)
    assert assign(box, [_carried([100, 100, 200, 220])], 10.6, POLICY) == [None]  # too old
    assert assign(box, [_carried([100, 100, 200, 220])], 9.7, POLICY)[0] is not None  # reordered
    assert assign(box, [_carried([150, 100, 250, 220])], 10.1, POLICY) == [None]  # moved away
    off = CarryPolicy(max_carry=0)
    assert assign(box, [_carried([100, 100, 200, 220])], 10.1, off) == [None]


def test_nothing_to_assign() -> None:
    assert assign(np.zeros((0, 4)), [_carried([0, 0, 1, 1])], 10.0, POLICY) == []
    assert assign(np.array([[0.0, 0, 10, 10]]), [], 10.0, POLICY) == [None]


def test_the_ledger_lends_each_embedding_at_most_max_carry_times() -> None:
    ledger = CarryLedger(max_carry=3, capacity=2)
    a, b = ledger.new_origin(), ledger.new_origin()
    assert a != b
    assert [ledger.claim(a) for _ in range(5)] == [1, 2, 3, 0, 0]
    assert ledger.claim(b) == 1
    c = ledger.new_origin()
    assert ledger.claim(c) == 1  # capacity 2: the oldest loan record (a) is forgotten
    assert CarryLedger(max_carry=0).claim(1) == 0


def test_a_snapshot_lends_what_the_ledger_had_left_when_the_frame_was_sent() -> None:
    ledger = CarryLedger(max_carry=2)
    a, b = ledger.new_origin(), ledger.new_origin()
    assert ledger.claim(a) == 1
    snap = ledger.snapshot([a, b])
    assert [snap.claim(a), snap.claim(a)] == [2, 0]
    assert [snap.claim(b), snap.claim(b), snap.claim(b)] == [1, 2, 0]
    assert snap.claim(12345) == 0  # an origin the frontend did not offer
    assert ledger.used(a) == 1 and ledger.used(b) == 0  # the ledger records loans itself


REGION = CarryPolicy(max_carry=3, iou_min=0.6, max_age_s=0.5, region_margin=0.5)


def _offer(*boxes: list[float], t: float = 10.0, region: bool = True) -> CarryOffer:
    view = View(np.array(boxes, dtype=np.float64).reshape(-1, 4), t, np.full(len(boxes), 100.0))
    return CarryOffer([], 10.1, REGION, CarryLedger(3), view, region)


def test_the_region_is_the_view_grown_by_the_margin_in_image_pixels() -> None:
    a, b = [200, 100, 300, 220], [700, 400, 760, 470]
    # scale 0.5: the image searched is the 1920 x 1080 frame decoded at half size.
    assert detection_region(_offer(a), 960, 540, 0.5) == (70, 20, 180, 140)
    # Two faces: one region around both; clipped to the image.
    assert detection_region(_offer(a, b), 960, 540, 0.5) == (70, 20, 398, 253)
    assert detection_region(_offer([0, 0, 1000, 1000]), 960, 540, 0.5) == (0, 0, 750, 540)


def test_a_tiny_face_gets_a_region_of_at_least_the_minimum_size() -> None:
    x0, y0, x1, y1 = detection_region(_offer([400, 400, 410, 410]), 960, 540, 0.5) or (0,) * 4
    assert x1 - x0 >= 48 and y1 - y0 >= 48
    assert x0 <= 200 <= x1 and y0 <= 200 <= y1


def test_no_region_without_a_fresh_view_or_a_margin() -> None:
    face = [200, 100, 300, 220]
    assert detection_region(_offer(face), 960, 540, 0.5) is not None
    assert detection_region(_offer(face, region=False), 960, 540, 0.5) is None  # whole is due
    assert detection_region(_offer(face, t=9.0), 960, 540, 0.5) is None  # stale
    assert detection_region(_offer(), 960, 540, 0.5) is None  # nobody in view
    off = replace(_offer(face), policy=replace(REGION, region_margin=0.0))
    assert detection_region(off, 960, 540, 0.5) is None


def test_a_whole_frame_replaces_the_view_a_region_search_only_updates_it() -> None:
    obama = np.array([[200.0, 100.0, 300.0, 220.0]])
    newcomer = np.array([[1500.0, 80.0, 1600.0, 200.0]])
    both = merge_view(None, np.concatenate([obama, newcomer]), 1.0, True, np.array([90, 80]))
    assert len(both.boxes) == 2 and both.t == 1.0
    # A region search (offered around an older view) found Obama, moved: the newcomer stays.
    moved = obama + 6
    after = merge_view(both, moved, 1.1, False, np.array([95.0]))
    np.testing.assert_array_equal(after.boxes, np.concatenate([moved, newcomer]))
    np.testing.assert_array_equal(after.sizes, [95.0, 80.0])
    assert after.t == 1.1
    # A whole-frame search is the truth: the newcomer left.
    assert len(merge_view(after, moved + 6, 1.2, True, np.array([95.0])).boxes) == 1
    assert len(merge_view(after, np.zeros((0, 4)), 1.3, True, np.zeros(0)).boxes) == 0


def test_a_region_search_that_may_have_missed_something_asks_for_the_whole_frame() -> None:
    region = (100, 50, 300, 250)  # image pixels at scale 0.5
    inside = np.array([[300.0, 200.0, 400.0, 320.0]])  # original pixels: (150, 100)-(200, 160)
    assert not region_misses(inside, region, 960, 540, 0.5, expected=1)
    assert region_misses(inside, region, 960, 540, 0.5, expected=2)  # a face is missing
    assert region_misses(np.zeros((0, 4)), region, 960, 540, 0.5, expected=1)
    cut = np.array([[202.0, 200.0, 300.0, 320.0]])  # at the region's left edge (x 101)
    assert region_misses(cut, region, 960, 540, 0.5, expected=1)
    # An edge of the region that is the image's edge cuts nothing.
    at_border = np.array([[0.0, 200.0, 100.0, 320.0]])
    assert not region_misses(at_border, (0, 50, 300, 250), 960, 540, 0.5, expected=1)


def test_regions_snap_outwards_to_the_detector_grid() -> None:
    # 960 x 540 searched at 640 x 360: stride 32 there is 48 pixels here.
    assert snap_region((70, 20, 180, 140), 2 / 3, 960, 540, 32) == (48, 0, 192, 144)
    assert snap_region((0, 0, 960, 540), 2 / 3, 960, 540, 32) == (0, 0, 960, 540)
    assert snap_region((900, 500, 950, 530), 2 / 3, 960, 540, 32) == (864, 480, 960, 540)
    assert snap_region((10, 10, 20, 20), 1.0, 640, 360, 32) == (0, 0, 32, 32)
