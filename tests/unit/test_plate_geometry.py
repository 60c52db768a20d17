"""Corner ordering, aspect and perspective rectification of plates."""

from __future__ import annotations

import itertools

import cv2
import numpy as np
import pytest

from recognizer.plates.geometry import corner_aspect, order_corners, rectify

# [TL, TR, BR, BL] of an axis-aligned 440 x 140 plate.
PLATE = np.array([[100, 50], [540, 50], [540, 190], [100, 190]], dtype=np.float64)


def _rotated(
    points: np.ndarray, degrees: float, centre: tuple[float, float] = (0, 0)
) -> np.ndarray:
    t = np.deg2rad(degrees)
    rot = np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]])
    c = np.asarray(centre, dtype=np.float64)
    return (points - c) @ rot.T + c


@pytest.mark.parametrize("perm", list(itertools.permutations(range(4))))
def test_order_corners_accepts_any_input_order(perm: tuple[int, ...]) -> None:
    np.testing.assert_allclose(order_corners(PLATE[list(perm)]), PLATE)


def test_order_corners_maps_the_ccpd_order() -> None:
    ccpd = PLATE[[2, 3, 0, 1]]  # bottom-right, bottom-left, top-left, top-right
    np.testing.assert_allclose(order_corners(ccpd), PLATE)


@pytest.mark.parametrize("degrees", [-44, -30, -15, -5, 0, 5, 15, 30, 44])
@pytest.mark.parametrize("aspect", [1.0, 2.0, 3.14, 6.0])
def test_order_corners_is_robust_to_tilt(degrees: float, aspect: float) -> None:
    h = 100.0
    rect = np.array([[0, 0], [aspect * h, 0], [aspect * h, h], [0, h]], dtype=np.float64)
    tilted = _rotated(rect, degrees) + np.array([400.0, 300.0])
    rng = np.random.default_rng(abs(int(degrees * 10 + aspect * 100)))
    shuffled = tilted[rng.permutation(4)]
    np.testing.assert_allclose(order_corners(shuffled), tilted, atol=1e-4)


def test_order_corners_handles_perspective_quadrilaterals() -> None:
    # The CCPD scene ccpd_05: a plate seen from the side, strongly sheared.
    ccpd = np.array([[501, 522], [242, 467], [236, 368], [495, 423]], dtype=np.float64)
    np.testing.assert_allclose(order_corners(ccpd), ccpd[[2, 3, 0, 1]])


def test_order_corners_is_translation_and_scale_invariant() -> None:
    tilted = _rotated(PLATE, 20, (300, 120))
    base = order_corners(tilted[::-1])
    np.testing.assert_allclose(
        order_corners(tilted[::-1] * 3.5 + 1000), base * 3.5 + 1000, rtol=1e-6
    )


def test_order_corners_degenerate_points_do_not_raise() -> None:
    same = np.full((4, 2), 7.0)
    assert order_corners(same).shape == (4, 2)
    line = np.array([[0, 0], [1, 0], [2, 0], [3, 0]], dtype=np.float64)
    assert sorted(order_corners(line)[:, 0].tolist()) == [0, 1, 2, 3]


@pytest.mark.parametrize(
    "bad",
    [
        np.zeros((3, 2)),
        np.zeros((4, 3)),
        np.zeros(8),
        np.array([[0, 0], [1, 0], [1, np.nan], [0, 1]]),
    ],
)
def test_order_corners_rejects_bad_shapes(bad: np.ndarray) -> None:
    with pytest.raises(ValueError, match="corners"):
        order_corners(bad)


@pytest.mark.parametrize(
    ("corners", "expected"),
    [
        (PLATE, 440 / 140),
        (_rotated(PLATE, 30), 440 / 140),
        (np.array([[0, 0], [440, 0], [440, 220], [0, 220]]), 2.0),
        (np.zeros((4, 2)), 0.0),
    ],
)
def test_corner_aspect(corners: np.ndarray, expected: float) -> None:
    assert corner_aspect(corners) == pytest.approx(expected, rel=1e-6)


def _pattern(h: int = 140, w: int = 440) -> np.ndarray:
    """A plate-sized test card: colour bands and a diagonal, easy to compare after a warp."""
    img = np.zeros((h, w, 3), np.uint8)
    img[:, : w // 3] = (255, 0, 0)
    img[:, w // 3 : 2 * w // 3] = (0, 255, 0)
    img[:, 2 * w // 3 :] = (0, 0, 255)
    img[: h // 2, :, 2] = 200
    cv2.line(img, (0, 0), (w - 1, h - 1), (255, 255, 255), 9)
    return img


def test_rectify_undoes_a_perspective_warp() -> None:
    card = _pattern()
    src = np.array([[0, 0], [440, 0], [440, 140], [0, 140]], np.float32) - 0.5
    quad = np.array([[210, 130], [620, 180], [600, 330], [190, 260]], np.float32)
    scene = cv2.warpPerspective(
        card, cv2.getPerspectiveTransform(src, quad), (800, 480), flags=cv2.INTER_LINEAR
    )
    flat = rectify(scene, quad[[2, 3, 0, 1]], height=140, max_width=1000)
    assert flat.shape[0] == 140
    expected = cv2.resize(card, (flat.shape[1], 140), interpolation=cv2.INTER_AREA)
    inner = (slice(6, -6), slice(10, -10))
    assert np.abs(flat[inner].astype(int) - expected[inner]).mean() < 12


@pytest.mark.parametrize(
    ("corners", "height", "max_width", "shape"),
    [
        (PLATE, 48, 320, (48, 151, 3)),  # width from the aspect ratio: 48 * 440 / 140
        (PLATE, 96, 320, (96, 302, 3)),
        (PLATE, 48, 100, (48, 100, 3)),  # capped
        (np.array([[0, 0], [4000, 0], [4000, 10], [0, 10]]), 48, 320, (48, 320, 3)),
        (np.array([[5, 5], [6, 5], [6, 300], [5, 300]]), 48, 320, (48, 1, 3)),  # at least 1
    ],
)
def test_rectify_shape(
    corners: np.ndarray, height: int, max_width: int, shape: tuple[int, ...]
) -> None:
    image = np.full((400, 700, 3), 90, np.uint8)
    assert rectify(image, corners, height=height, max_width=max_width).shape == shape


def test_rectify_margin_widens_the_view() -> None:
    image = np.zeros((400, 700, 3), np.uint8)
    image[50:191, 100:541] = 255  # exactly the plate
    tight = rectify(image, PLATE, height=48, max_width=400)
    loose = rectify(image, PLATE, height=48, max_width=400, margin=0.2)
    assert tight[4:-4, 4:-4].min() == 255
    assert loose[:3].max() == 0 and loose[:, :3].max() == 0  # the black surround shows
    assert (loose == 255).mean() < 0.75 < (tight == 255).mean()


@pytest.mark.parametrize(
    "corners",
    [
        np.full((4, 2), 7.0),
        np.array([[0, 0], [10, 0], [20, 0], [30, 0]]),
        np.array([[0, 0], [100, 0], [100, 1e-4], [0, 1e-4]]),
    ],
    ids=["one-point", "collinear", "flat"],
)
def test_rectify_degenerate_corners_do_not_raise(corners: np.ndarray) -> None:
    flat = rectify(np.full((100, 200, 3), 50, np.uint8), corners)
    assert flat.shape[0] == 48 and 1 <= flat.shape[1] <= 320


def test_rectify_grey_images_and_bad_input() -> None:
    assert rectify(np.zeros((300, 600), np.uint8), PLATE).shape == (48, 151)
    with pytest.raises(ValueError, match="uint8"):
        rectify(np.zeros((300, 600, 3), np.float32), PLATE)
    with pytest.raises(ValueError, match="corners"):
        rectify(np.zeros((300, 600, 3), np.uint8), PLATE[:3])
    with pytest.raises(ValueError, match="height"):
        rectify(np.zeros((300, 600, 3), np.uint8), PLATE, height=0)
