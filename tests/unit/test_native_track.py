"""``native.vote_and_best``: vote and best-shot table, edge cases, kernel == numpy reference."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

import native
from native.reference import vote_and_best_ref

CYTHON = native._load_backend("cython")
IMPLEMENTATIONS: dict[str, Callable[..., tuple[int, int, int, int]]] = {
    "cython": CYTHON.vote_and_best,
    "reference": vote_and_best_ref,
}
NAN = float("nan")
OPEN, ALERT, STRANGER, NONE = 2, 3, 4, 1


def _arrays(
    keys: list[int],
    actions: list[int] | None = None,
    shot: list[float] | None = None,
) -> tuple[np.ndarray, ...]:
    n = len(keys)
    acts = actions if actions is not None else [OPEN] * n
    q = shot if shot is not None else [1.0] * n
    return (
        np.array(keys, np.int64),
        np.array(acts, np.int8),
        np.array(q, np.float32),
        np.ones(n, np.float32),
        np.ones(n, np.float32),
    )


# keys, actions, votes_needed, window -> decided_key, decided_action, agree_count
VOTES = [
    ("empty", [], None, 2, 3, -1, 0, 0),
    ("one vote is not enough", [7], None, 2, 3, -1, 0, 1),
    ("two of three", [7, -2, 7], None, 2, 3, 7, OPEN, 2),
    ("votes_needed 1", [7], None, 1, 3, 7, OPEN, 1),
    ("outside the window", [7, -2, -2, 7], None, 2, 3, -1, 0, 1),
    ("all unusable", [-2, -2, -2], [NONE] * 3, 2, 3, -1, 0, 0),
    ("keys below -2 are unusable too", [-5, -3, -9], None, 1, 3, -1, 0, 0),
    ("unmatched votes decide", [-1, -1], [STRANGER] * 2, 2, 3, -1, STRANGER, 2),
    ("majority wins", [4, 9, 9], None, 2, 3, 9, OPEN, 2),
    ("tie: the newer vote wins", [4, 4, 9, 9], [OPEN, OPEN, ALERT, ALERT], 2, 4, 9, ALERT, 2),
    ("tie below votes_needed", [4, 9], None, 2, 3, -1, 0, 1),
    ("action of the newest entry", [5, 5], [STRANGER, OPEN], 2, 3, 5, OPEN, 2),
    ("window longer than n", [3, 3], None, 2, 50, 3, OPEN, 2),
    ("votes_needed above window", [3, 3, 3], None, 4, 3, -1, 0, 3),
    ("key 0 is an identity", [0, 0, -1], [OPEN, OPEN, STRANGER], 2, 3, 0, OPEN, 2),
    ("large keys", [2**40, 2**40], None, 2, 3, 2**40, OPEN, 2),
]


@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
@pytest.mark.parametrize(
    ("keys", "actions", "votes_needed", "window", "key", "action", "agree"),
    [case[1:] for case in VOTES],
    ids=[case[0] for case in VOTES],
)
def test_vote_table(
    *,
    impl: str,
    keys: list[int],
    actions: list[int] | None,
    votes_needed: int,
    window: int,
    key: int,
    action: int,
    agree: int,
) -> None:
    out = IMPLEMENTATIONS[impl](*_arrays(keys, actions), votes_needed, window)
    assert out[:3] == (key, action, agree)
    assert out[3] == (0 if keys else -1)  # equal shots: the earliest


# quality column (size and det_score 1) -> best_index
SHOTS = [
    ("empty", [], -1),
    ("single", [0.3], 0),
    ("argmax", [0.1, 0.9, 0.5], 1),
    ("ties go to the earliest", [0.2, 0.9, 0.9], 1),
    ("NaN never wins", [NAN, 0.1, NAN], 1),
    ("all NaN: the first", [NAN, NAN], 0),
    ("zeros: the first", [0.0, 0.0], 0),
    ("-inf below everything", [-np.inf, -1.0], 1),
]


@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
@pytest.mark.parametrize(
    ("quality", "best"), [case[1:] for case in SHOTS], ids=[case[0] for case in SHOTS]
)
def test_best_shot_table(impl: str, quality: list[float], best: int) -> None:
    keys = [-2] * len(quality)
    out = IMPLEMENTATIONS[impl](*_arrays(keys, None, quality), 2, 3)
    assert out == (-1, 0, 0, best)


@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
def test_best_shot_is_the_product(impl: str) -> None:
    keys, actions = np.full(3, -2, np.int64), np.full(3, NONE, np.int8)
    quality = np.float32([0.9, 0.5, 0.8])
    size = np.float32([40, 120, 60])
    det = np.float32([0.99, 0.9, 0.95])  # products 35.6, 54, 45.6
    assert IMPLEMENTATIONS[impl](keys, actions, quality, size, det, 2, 3)[3] == 1


@pytest.mark.parametrize("seed", range(20))
def test_kernel_matches_reference_on_random_tracks(seed: int) -> None:
    rng = np.random.default_rng(seed)
    for _ in range(25):
        n = int(rng.integers(0, 40))
        keys = rng.integers(-3, 4, n).astype(np.int64)
        actions = rng.integers(1, 5, n).astype(np.int8)
        # Coarse grids make ties in count and in shot common; a few NaNs.
        quality = (rng.integers(0, 4, n) / 4).astype(np.float32)
        quality[rng.random(n) < 0.05] = NAN
        size = rng.integers(1, 3, n).astype(np.float32)
        det = (rng.integers(1, 3, n) / 2).astype(np.float32)
        votes_needed = int(rng.integers(1, 4))
        window = int(rng.integers(1, 8))
        args = (keys, actions, quality, size, det, votes_needed, window)
        assert CYTHON.vote_and_best(*args) == vote_and_best_ref(*args), args


def test_public_function_coerces_and_names_fields() -> None:
    out = native.vote_and_best([3, 3], [2, 2], [0.5, 0.9], [1, 1], [1.0, 1.0], 2, 3)
    assert out == native.VoteResult(decided_key=3, decided_action=2, agree_count=2, best_index=1)
    assert all(isinstance(v, int) for v in out)


@pytest.mark.parametrize(
    ("lengths", "message"),
    [
        ((3, 2, 3, 3, 3), r"actions: expected shape \(3,\), got \(2,\)"),
        ((3, 3, 3, 4, 3), r"size: expected shape \(3,\), got \(4,\)"),
        ((3, 3, 3, 3, 0), r"det_score: expected shape \(3,\), got \(0,\)"),
    ],
)
def test_mismatched_lengths_raise_value_error(lengths: tuple[int, ...], message: str) -> None:
    arrays = [np.zeros(n) for n in lengths]
    with pytest.raises(ValueError, match=message):
        native.vote_and_best(*arrays, 2, 3)


def test_two_dimensional_input_raises_value_error() -> None:
    with pytest.raises(ValueError, match=r"identity_keys: expected a 1-D array, got shape"):
        native.vote_and_best(np.zeros((2, 2)), *[np.zeros(2)] * 4, 2, 3)


@pytest.mark.parametrize(("votes_needed", "window"), [(0, 3), (2, 0), (-1, -1)])
def test_bad_vote_parameters_raise_value_error(votes_needed: int, window: int) -> None:
    with pytest.raises(ValueError, match="votes_needed and window must be >= 1"):
        native.vote_and_best(*_arrays([1]), votes_needed, window)
