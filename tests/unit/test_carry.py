"""recognizer.faces.carry: which faces of a new frame may reuse a decided face's embedding."""

from __future__ import annotations

import numpy as np

from recognizer.faces.carry import Carried, CarryLedger, CarryPolicy, assign, iou_matrix


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
