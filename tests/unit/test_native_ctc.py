"""``native.ctc_greedy_decode``: hand-built sequences, edge cases, kernel == numpy reference."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

import native
from native.reference import ctc_greedy_decode_ref

CYTHON = native._load_backend("cython")
IMPLEMENTATIONS: dict[str, Callable[..., native.CTCArrays]] = {
    "cython": CYTHON.ctc_greedy_decode,
    "reference": ctc_greedy_decode_ref,
}


def _path_probs(path: list[int], peaks: list[float], classes: int) -> np.ndarray:
    """``(1, t, classes)`` probabilities whose argmax at step ``s`` is ``path[s]``."""
    probs = np.zeros((1, len(path), classes), np.float32)
    for step, (label, peak) in enumerate(zip(path, peaks, strict=True)):
        probs[0, step, :] = (1 - peak) / (classes - 1)
        probs[0, step, label] = peak
    return probs


# path, peak probability per step, blank -> labels, confidences
SEQUENCES = [
    ("collapse and drop blank", [1, 1, 0, 1, 2, 2, 0], [0.6, 0.9, 0.8, 0.7, 0.5, 0.95, 0.9], 0,
     [1, 1, 2], [0.9, 0.7, 0.95]),
    ("repeat without blank collapses", [3, 3, 3], [0.5, 0.7, 0.6], 0, [3], [0.7]),
    ("all blank", [0, 0, 0], [0.9, 0.9, 0.9], 0, [], []),
    ("single step", [2], [0.8], 0, [2], [0.8]),
    ("blank is not class 0", [0, 4, 4, 0, 0], [0.5, 0.9, 0.9, 0.6, 0.7], 4, [0, 0], [0.5, 0.7]),
    ("leading and trailing blanks", [0, 0, 5, 0, 0], [0.9, 0.9, 0.4, 0.9, 0.9], 0, [5], [0.4]),
]  # fmt: skip


@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
@pytest.mark.parametrize("classes", [6, 100, 6625])
@pytest.mark.parametrize(
    ("path", "peaks", "blank", "labels", "confidences"),
    [case[1:] for case in SEQUENCES],
    ids=[case[0] for case in SEQUENCES],
)
def test_hand_built_sequences(
    *,
    impl: str,
    classes: int,
    path: list[int],
    peaks: list[float],
    blank: int,
    labels: list[int],
    confidences: list[float],
) -> None:
    probs = _path_probs(path, peaks, classes)
    out = IMPLEMENTATIONS[impl](probs, blank)
    t, n = len(path), len(labels)
    assert out.lengths.tolist() == [n]
    assert out.labels.tolist() == [labels + [-1] * (t - n)]
    np.testing.assert_array_equal(out.confidences, np.float32([confidences + [0.0] * (t - n)]))
    assert (out.labels.dtype, out.confidences.dtype, out.lengths.dtype) == (
        np.int32,
        np.float32,
        np.int32,
    )


@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
@pytest.mark.parametrize("classes", [3, 64, 65, 200])
def test_ties_take_the_first_class(impl: str, classes: int) -> None:
    probs = np.zeros((1, 2, classes), np.float32)
    probs[0, 0, [1, classes - 1]] = 0.5  # first step: tie between 1 and the last class
    probs[0, 1, [2, classes - 1]] = 0.5
    out = IMPLEMENTATIONS[impl](probs, 0)
    assert out.labels.tolist() == [[1, 2]]


@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
@pytest.mark.parametrize("shape", [(2, 0, 10), (0, 40, 10), (0, 0, 1)])
def test_empty_shapes(impl: str, shape: tuple[int, int, int]) -> None:
    out = IMPLEMENTATIONS[impl](np.zeros(shape, np.float32), 0)
    n, t, _ = shape
    assert out.labels.shape == (n, t)
    assert out.confidences.shape == (n, t)
    assert out.lengths.tolist() == [0] * n


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize(
    ("n", "t", "c"),
    [(1, 40, 6625), (8, 40, 6625), (3, 25, 1), (5, 17, 63), (5, 17, 64), (5, 17, 65), (2, 80, 7)],
)
def test_kernel_matches_reference_on_random_probs(seed: int, n: int, t: int, c: int) -> None:
    rng = np.random.default_rng(seed)
    probs = rng.random((n, t, c), dtype=np.float32)
    probs[..., 0] += rng.random((n, t), dtype=np.float32) * 2  # blank often wins
    if c > 1:
        probs[:, ::3, c // 2] += 3  # runs of one class, max somewhere in the middle block
    coarse = np.round(probs * 4) / 4  # many ties
    for case in (probs, coarse.astype(np.float32)):
        for blank in {0, c - 1}:
            expected = ctc_greedy_decode_ref(case, blank)
            actual = CYTHON.ctc_greedy_decode(case, blank)
            for name in native.CTCArrays._fields:
                np.testing.assert_array_equal(getattr(actual, name), getattr(expected, name))


def test_public_function_coerces_dtype_and_layout() -> None:
    probs = _path_probs([1, 1, 0, 2], [0.9, 0.8, 0.7, 0.6], 5).astype(np.float64)
    out = native.ctc_greedy_decode(np.swapaxes(np.swapaxes(probs, 1, 2).copy(), 1, 2))
    assert out.labels.tolist() == [[1, 2, -1, -1]]


@pytest.mark.parametrize(
    ("shape", "blank", "error", "message"),
    [
        ((40, 6625), 0, ValueError, r"probs: expected a 3-D array, got shape \(40, 6625\)"),
        ((1, 40, 0), 0, ValueError, r"expected shape \(n, t, c\) with c >= 1, got \(1, 40, 0\)"),
        ((1, 4, 5), 5, ValueError, r"blank: expected 0 <= blank < 5, got 5"),
        ((1, 4, 5), -1, ValueError, r"blank: expected 0 <= blank < 5, got -1"),
        ((1, 4, 5), 1.5, TypeError, "integer"),
    ],
)
def test_bad_inputs_raise(
    shape: tuple[int, ...], blank: object, error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        native.ctc_greedy_decode(np.zeros(shape, np.float32), blank)  # type: ignore[arg-type]
