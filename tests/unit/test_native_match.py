"""``native.match_identities``: decision table, edge cases, kernel == numpy reference."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

import native
from native.reference import match_identities_ref

CYTHON = native._load_backend("cython")
IMPLEMENTATIONS: dict[str, Callable[..., native.MatchArrays]] = {
    "cython": CYTHON.match_identities,
    "reference": match_identities_ref,
}
NAN, INF = float("nan"), float("inf")

# sims row, keys row, threshold, margin -> person, score, runner_up, accepted
DECISIONS = [
    ("one person, best slot counts", [0.9, 0.8], [7, 7], 0.5, 0.1, 7, 0.9, -1.0, True),
    ("clear winner", [0.9, 0.5, 0.6], [1, 2, 2], 0.5, 0.1, 1, 0.9, 0.6, True),
    ("margin too small", [0.9, 0.85], [1, 2], 0.5, 0.1, 1, 0.9, 0.85, False),
    ("margin exactly met", [0.75, 0.5], [1, 2], 0.5, 0.25, 1, 0.75, 0.5, True),
    ("below threshold", [0.4, 0.1], [1, 2], 0.5, 0.1, 1, 0.4, 0.1, False),
    ("score equal to threshold", [0.5, 0.1], [1, 2], 0.5, 0.1, 1, 0.5, 0.1, True),
    ("tie goes to lower key", [0.9, 0.9], [5, 3], 0.5, 0.0, 3, 0.9, 0.9, True),
    ("tie, margin > 0 rejects", [0.9, 0.9], [5, 3], 0.5, 0.01, 3, 0.9, 0.9, False),
    ("empty slots ignored", [0.99, 0.7, 0.2], [-1, 4, -1], 0.5, 0.1, 4, 0.7, -1.0, True),
    ("all slots empty", [0.9, 0.8], [-1, -1], 0.5, 0.1, -1, -1.0, -1.0, False),
    ("NaN slot is no candidate", [NAN, 0.6], [1, 2], 0.5, 0.1, 2, 0.6, -1.0, True),
    ("-inf slot is no candidate", [-INF, 0.6], [1, 2], 0.5, 0.1, 2, 0.6, -1.0, True),
    ("only NaN and -inf", [NAN, -INF], [1, 2], 0.5, 0.1, -1, -1.0, -1.0, False),
    ("negative scores", [-0.3, -0.2], [1, 2], -0.5, 0.05, 2, -0.2, -0.3, True),
    ("runner-up below -1", [0.9, -2.0], [1, 2], 0.5, 0.1, 1, 0.9, -2.0, True),
]


@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
@pytest.mark.parametrize(
    ("sims", "keys", "threshold", "margin", "person", "score", "runner_up", "accepted"),
    [case[1:] for case in DECISIONS],
    ids=[case[0] for case in DECISIONS],
)
def test_decision_table(
    *,
    impl: str,
    sims: list[float],
    keys: list[int],
    threshold: float,
    margin: float,
    person: int,
    score: float,
    runner_up: float,
    accepted: bool,
) -> None:
    out = IMPLEMENTATIONS[impl](
        np.array([sims], np.float32), np.array([keys], np.int64), threshold, margin
    )
    assert out.person.tolist() == [person]
    np.testing.assert_array_equal(out.score, np.float32([score]))
    np.testing.assert_array_equal(out.runner_up, np.float32([runner_up]))
    assert out.accepted.tolist() == [accepted]


@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
@pytest.mark.parametrize("shape", [(3, 0), (0, 5), (0, 0)])
def test_empty_shapes(impl: str, shape: tuple[int, int]) -> None:
    out = IMPLEMENTATIONS[impl](np.zeros(shape, np.float32), np.zeros(shape, np.int64), 0.5, 0.1)
    q = shape[0]
    assert out.person.tolist() == [-1] * q
    assert out.score.tolist() == [-1.0] * q
    assert out.runner_up.tolist() == [-1.0] * q
    assert out.accepted.tolist() == [False] * q


@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
def test_result_dtypes(impl: str) -> None:
    out = IMPLEMENTATIONS[impl](np.ones((2, 3), np.float32), np.ones((2, 3), np.int64), 0.5, 0.1)
    assert [a.dtype for a in out] == [np.int64, np.float32, np.float32, np.bool_]
    assert all(a.shape == (2,) for a in out)


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize(("q", "k", "n_people"), [(1, 10, 4), (64, 50, 12), (200, 5, 3)])
def test_kernel_matches_reference_on_random_hits(seed: int, q: int, k: int, n_people: int) -> None:
    rng = np.random.default_rng(seed)
    # Scores on a coarse grid so ties across people are common; some empty slots.
    sims = (rng.integers(-5, 11, (q, k)) / 10).astype(np.float32)
    keys = rng.integers(-1, n_people, (q, k)).astype(np.int64)
    keys[rng.random(q) < 0.1] = -1
    for threshold, margin in ((0.5, 0.1), (0.0, 0.0), (0.8, 0.3)):
        expected = match_identities_ref(sims, keys, threshold, margin)
        actual = CYTHON.match_identities(sims, keys, threshold, margin)
        for name in native.MatchArrays._fields:
            np.testing.assert_array_equal(getattr(actual, name), getattr(expected, name), name)


def test_public_function_coerces_dtype_and_layout() -> None:
    sims = np.asfortranarray(np.array([[0.9, 0.5], [0.2, 0.7]]))  # float64, F-order
    keys = [[1, 2], [3, 4]]
    out = native.match_identities(sims, keys, 0.5, 0.1)
    assert out.person.tolist() == [1, 4]
    assert out.accepted.tolist() == [True, True]


@pytest.mark.parametrize(
    ("sims_shape", "keys_shape", "message"),
    [
        ((2, 3), (2, 4), r"person_keys: expected shape \(2, 3\) \(as similarities\), got \(2, 4\)"),
        ((6,), (6,), r"similarities: expected a 2-D array, got shape \(6,\)"),
        ((2, 3), (2, 3, 1), r"person_keys: expected a 2-D array, got shape \(2, 3, 1\)"),
    ],
)
def test_bad_shapes_raise_value_error(
    sims_shape: tuple[int, ...], keys_shape: tuple[int, ...], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        native.match_identities(np.zeros(sims_shape), np.zeros(keys_shape, np.int64), 0.5, 0.1)
