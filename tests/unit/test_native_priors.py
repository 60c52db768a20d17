"""``native.prior_boxes``: RetinaFace prior layout, caching and argument checks."""

from __future__ import annotations

import math

import numpy as np
import pytest

import native


def _naive_priors(
    height: int, width: int, steps: tuple[int, ...], min_sizes: tuple[tuple[int, ...], ...]
) -> np.ndarray:
    rows = []
    for step, sizes in zip(steps, min_sizes, strict=True):
        for i in range(math.ceil(height / step)):
            for j in range(math.ceil(width / step)):
                for size in sizes:
                    rows.append([(j + 0.5) * step, (i + 0.5) * step, size, size])
    return np.asarray(rows, dtype=np.float32).reshape(-1, 4)


@pytest.mark.parametrize(
    ("height", "width", "min_sizes", "expected_p"),
    [
        (360, 640, native.RETINAFACE_MIN_SIZES, 2 * (80 * 45 + 40 * 23 + 20 * 12)),
        (640, 640, native.PLATE_MIN_SIZES, 2 * (80 * 80 + 40 * 40 + 20 * 20)),
        (37, 50, native.RETINAFACE_MIN_SIZES, 2 * (5 * 7 + 3 * 4 + 2 * 2)),
        (1, 1, native.RETINAFACE_MIN_SIZES, 6),
        (0, 640, native.RETINAFACE_MIN_SIZES, 0),
    ],
)
def test_layout_matches_naive_loops(
    height: int, width: int, min_sizes: tuple[tuple[int, ...], ...], expected_p: int
) -> None:
    priors = native.prior_boxes(height, width, min_sizes=min_sizes)
    assert priors.shape == (expected_p, 4)
    assert priors.dtype == np.float32
    np.testing.assert_array_equal(
        priors, _naive_priors(height, width, native.RETINAFACE_STEPS, min_sizes)
    )


def test_first_rows_follow_retinaface_order() -> None:
    priors = native.prior_boxes(360, 640)
    np.testing.assert_array_equal(
        priors[:4], [[4, 4, 16, 16], [4, 4, 32, 32], [12, 4, 16, 16], [12, 4, 32, 32]]
    )
    second_level = 2 * 80 * 45
    np.testing.assert_array_equal(priors[second_level], [8, 8, 64, 64])


def test_cached_and_read_only() -> None:
    first = native.prior_boxes(360, 640)
    assert native.prior_boxes(360, 640, [8, 16, 32], [[16, 32], [64, 128], [256, 512]]) is first
    assert not first.flags.writeable
    with pytest.raises(ValueError, match="read-only"):
        first[0, 0] = 1.0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"height": -1, "width": 10}, "height and width must be >= 0"),
        ({"height": 10, "width": 10, "steps": (8, 16)}, "one min_sizes entry per step"),
        ({"height": 10, "width": 10, "steps": (0, 16, 32)}, "must be > 0"),
        (
            {"height": 10, "width": 10, "min_sizes": ((16, 0), (64,), (256,))},
            "must be > 0",
        ),
    ],
)
def test_bad_arguments_raise_value_error(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        native.prior_boxes(**kwargs)


def test_non_integer_size_raises_type_error() -> None:
    with pytest.raises(TypeError):
        native.prior_boxes(360.5, 640)  # type: ignore[arg-type]
