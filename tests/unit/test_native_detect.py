"""``native.decode_detections``: hand-computed cases, edge cases, kernel == numpy reference."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest

import native
from native.reference import decode_detections_ref

CYTHON = native._load_backend("cython")
IMPLEMENTATIONS = {"cython": CYTHON.decode_detections, "reference": decode_detections_ref}


def _decode(impl: str, *args: np.ndarray, **kwargs: Any) -> native.DetectionArrays:
    """Run one implementation on arrays normalised like the public function does."""
    arrays = [np.ascontiguousarray(a, dtype=np.float32) for a in args]
    return IMPLEMENTATIONS[impl](*arrays, **kwargs)


def _head(priors: list[list[float]], scores: list[float], n_points: int = 5) -> tuple:
    p = len(priors)
    return (
        np.zeros((p, 4), np.float32),
        np.asarray(scores, np.float32),
        np.zeros((p, 2 * n_points), np.float32),
        np.asarray(priors, np.float32).reshape(p, 4),
    )


@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
def test_hand_computed_decode(impl: str) -> None:
    priors = np.array([[100, 50, 20, 40]], np.float32)
    loc = np.array([[1.0, -0.5, 0.0, 5 * math.log(2)]], np.float32)
    points = np.array([[1.0, 2.0, -1.0, 0.0]], np.float32)
    out = _decode(impl, loc, np.array([0.9]), points, priors, score_threshold=0.5, nms_iou=0.4)
    # cx = 100 + 1 * 0.1 * 20 = 102, cy = 50 - 0.5 * 0.1 * 40 = 48, w = 20, h = 40 * 2 = 80
    np.testing.assert_allclose(out.boxes, [[92, 8, 112, 88]], rtol=1e-6)
    np.testing.assert_array_equal(out.scores, np.float32([0.9]))
    np.testing.assert_allclose(out.points, [[[102, 58], [98, 50]]], rtol=1e-6)


@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
def test_hand_computed_nms(impl: str) -> None:
    # A [90,90,110,110] .9; B [95,90,115,110] .8 has IoU 300/500 = .6 with A; C far; D low.
    head = _head(
        [[100, 100, 20, 20], [105, 100, 20, 20], [200, 200, 20, 20], [300, 300, 20, 20]],
        [0.9, 0.8, 0.7, 0.1],
    )
    out = _decode(impl, *head, score_threshold=0.5, nms_iou=0.4)
    np.testing.assert_array_equal(out.boxes, [[90, 90, 110, 110], [190, 190, 210, 210]])
    np.testing.assert_array_equal(out.scores, np.float32([0.9, 0.7]))
    assert out.points.shape == (2, 5, 2)
    np.testing.assert_array_equal(out.points[1], np.full((5, 2), 200, np.float32))


@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
@pytest.mark.parametrize(("nms_iou", "kept"), [(0.5, 2), (0.49, 1)])
def test_iou_equal_to_threshold_is_not_suppressed(impl: str, nms_iou: float, kept: int) -> None:
    # [0,0,10,10] and [0,0,10,5]: IoU exactly 50 / 100.
    head = _head([[5, 5, 10, 10], [5, 2.5, 10, 5]], [0.9, 0.8])
    out = _decode(impl, *head, score_threshold=0.5, nms_iou=nms_iou)
    assert len(out.scores) == kept


EDGE_CASES: list[tuple[str, tuple, dict[str, Any], list[float]]] = [
    ("zero priors", _head([], []), {}, []),
    ("nothing above threshold", _head([[10, 10, 4, 4]] * 3, [0.1, 0.2, 0.49]), {}, []),
    ("score equal to threshold kept", _head([[10, 10, 4, 4]], [0.5]), {}, [0.5]),
    ("identical boxes keep best", _head([[10, 10, 4, 4]] * 4, [0.6, 0.9, 0.7, 0.9]), {}, [0.9]),
    ("zero-area boxes never suppress", _head([[10, 10, 0, 0]] * 3, [0.6, 0.9, 0.7]), {},
     [0.9, 0.7, 0.6]),
    ("max_out caps", _head([[10 * i, 0, 4, 4] for i in range(5)], [0.6, 0.7, 0.8, 0.9, 0.95]),
     {"max_out": 2}, [0.95, 0.9]),
    ("max_out zero", _head([[10, 10, 4, 4]], [0.9]), {"max_out": 0}, []),
    ("max_candidates caps before nms",
     _head([[10, 10, 4, 4], [50, 50, 4, 4], [10, 10, 4, 4]], [0.9, 0.8, 0.95]),
     {"max_candidates": 2}, [0.95]),
    ("max_candidates zero", _head([[10, 10, 4, 4]], [0.9]), {"max_candidates": 0}, []),
    ("no points", _head([[10, 10, 4, 4], [50, 50, 4, 4]], [0.9, 0.8], n_points=0), {},
     [0.9, 0.8]),
    ("nms_iou 1 keeps duplicates", _head([[10, 10, 4, 4]] * 2, [0.9, 0.8]), {"nms_iou": 1.0},
     [0.9, 0.8]),
]  # fmt: skip


@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
@pytest.mark.parametrize(
    ("head", "kwargs", "expected_scores"),
    [case[1:] for case in EDGE_CASES],
    ids=[case[0] for case in EDGE_CASES],
)
def test_edge_cases(
    impl: str, head: tuple, kwargs: dict[str, Any], expected_scores: list[float]
) -> None:
    options = {"score_threshold": 0.5, "nms_iou": 0.4} | kwargs
    out = _decode(impl, *head, **options)
    n, n_points = len(expected_scores), head[2].shape[1] // 2
    np.testing.assert_array_equal(out.scores, np.float32(expected_scores))
    assert out.boxes.shape == (n, 4)
    assert out.points.shape == (n, n_points, 2)
    assert {a.dtype for a in out} == {np.dtype(np.float32)}


def test_identical_scores_keep_lower_prior_index() -> None:
    head = _head([[10, 10, 4, 4], [10, 10, 6, 6]], [0.9, 0.9])
    for impl in IMPLEMENTATIONS:
        out = _decode(impl, *head, score_threshold=0.5, nms_iou=0.1)
        np.testing.assert_array_equal(out.boxes, [[8, 8, 12, 12]])


def _random_head(
    seed: int, height: int, width: int, n_points: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    priors = native.prior_boxes(height, width)
    p = priors.shape[0]
    loc = rng.normal(0, 1, (p, 4)).astype(np.float32)
    points = rng.normal(0, 2, (p, 2 * n_points)).astype(np.float32)
    scores = (rng.permutation(p) / p).astype(np.float32)  # distinct: no tie ambiguity
    return loc, scores, points, priors


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize(
    ("height", "width", "n_points", "threshold", "nms_iou", "max_candidates", "max_out"),
    [
        (120, 160, 5, 0.5, 0.4, 5000, 256),
        (96, 96, 4, 0.0, 0.3, 300, 50),
        (64, 200, 0, 0.9, 0.6, 5000, 1000),
        (200, 120, 5, 0.2, 0.0, 5000, 256),
    ],
)
def test_kernel_matches_reference_on_random_heads(
    *,
    seed: int,
    height: int,
    width: int,
    n_points: int,
    threshold: float,
    nms_iou: float,
    max_candidates: int,
    max_out: int,
) -> None:
    head = _random_head(seed, height, width, n_points)
    options = {
        "score_threshold": threshold,
        "nms_iou": nms_iou,
        "max_candidates": max_candidates,
        "max_out": max_out,
    }
    expected = decode_detections_ref(*head, **options)
    actual = CYTHON.decode_detections(*head, **options)
    assert len(expected.scores) > 0
    np.testing.assert_array_equal(actual.scores, expected.scores)
    np.testing.assert_allclose(actual.boxes, expected.boxes, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(actual.points, expected.points, rtol=1e-5, atol=1e-4)


def test_public_function_coerces_dtype_and_layout() -> None:
    loc, scores, points, priors = _random_head(0, 64, 64, 5)
    options = {"score_threshold": 0.5, "nms_iou": 0.4}
    expected = decode_detections_ref(loc, scores, points, priors, **options)
    wide = np.stack([1 - scores, scores], axis=1).astype(np.float64)  # scores as a column view
    actual = native.decode_detections(
        np.asfortranarray(loc), wide[:, 1], points.tolist(), priors, **options
    )
    np.testing.assert_array_equal(actual.scores, expected.scores)
    np.testing.assert_allclose(actual.boxes, expected.boxes, rtol=1e-5, atol=1e-4)


def _bad(**changes: Any) -> dict[str, Any]:
    p = 3
    args: dict[str, Any] = {
        "loc": np.zeros((p, 4)),
        "scores": np.zeros(p),
        "points": np.zeros((p, 10)),
        "priors": np.zeros((p, 4)),
        "score_threshold": 0.5,
        "nms_iou": 0.4,
    }
    return args | changes


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (_bad(loc=np.zeros((3, 5))), r"loc: expected shape \(3, 4\), got \(3, 5\)"),
        (_bad(loc=np.zeros(12)), r"loc: expected a 2-D array, got shape \(12,\)"),
        (_bad(scores=np.zeros(4)), r"scores: expected shape \(3,\), got \(4,\)"),
        (_bad(scores=np.zeros((3, 1))), r"scores: expected a 1-D array, got shape \(3, 1\)"),
        (_bad(points=np.zeros((3, 9))), r"points: expected shape \(3, 2L\), got \(3, 9\)"),
        (_bad(points=np.zeros((2, 10))), r"points: expected shape \(3, 2L\), got \(2, 10\)"),
        (_bad(priors=np.zeros((3, 3))), r"priors: expected shape \(p, 4\), got \(3, 3\)"),
        (_bad(variances=(0.1, 0.2, 0.3)), "variances: expected 2 values, got 3"),
        (_bad(max_out=-1), "must be >= 0"),
        (_bad(max_candidates=-5), "must be >= 0"),
    ],
)
def test_bad_inputs_raise_value_error(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        native.decode_detections(**kwargs)
