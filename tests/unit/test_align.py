"""Similarity alignment and context crops."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from recognizer.faces.align import TEMPLATE_112, align_face, context_crop, umeyama_similarity


def _apply(matrix: np.ndarray, pts: np.ndarray) -> np.ndarray:
    return pts @ matrix[:, :2].T + matrix[:, 2]


@pytest.mark.parametrize(
    ("angle", "scale", "shift"), [(0.0, 1.0, (0, 0)), (0.3, 2.5, (40, -7)), (-1.2, 0.4, (300, 200))]
)
def test_umeyama_recovers_a_known_similarity(angle: float, scale: float, shift: tuple) -> None:
    c, s = np.cos(angle), np.sin(angle)
    truth = np.array([[scale * c, -scale * s, shift[0]], [scale * s, scale * c, shift[1]]])
    src = TEMPLATE_112 * 1.7 + 13
    dst = _apply(truth, src)
    np.testing.assert_allclose(umeyama_similarity(src, dst), truth, atol=1e-9)


def test_umeyama_rejects_bad_shapes_and_degenerate_points() -> None:
    with pytest.raises(ValueError, match="point sets"):
        umeyama_similarity(np.zeros((5, 3)), np.zeros((5, 3)))
    with pytest.raises(ValueError, match="identical"):
        umeyama_similarity(np.ones((5, 2)), TEMPLATE_112)


def test_align_maps_landmarks_onto_the_template() -> None:
    image = np.zeros((400, 400, 3), np.uint8)
    landmarks = TEMPLATE_112 * 2 + 100  # a face twice the template size
    for x, y in landmarks.astype(int):
        image[y - 2 : y + 3, x - 2 : x + 3] = 255
    crop = align_face(image, landmarks)
    assert crop.shape == (112, 112, 3)
    for x, y in TEMPLATE_112.round().astype(int):
        assert crop[y, x].max() > 100


def test_align_from_a_half_scale_image_matches_full_scale() -> None:
    rng = np.random.default_rng(0)
    noise = rng.integers(0, 255, (400, 400, 3), dtype=np.uint8)
    full = cv2.GaussianBlur(noise, (0, 0), 6)
    half = cv2.resize(full, (200, 200), interpolation=cv2.INTER_AREA)
    landmarks = TEMPLATE_112 * 3 + 20
    a = align_face(full, landmarks).astype(int)
    b = align_face(half, landmarks, image_scale=0.5).astype(int)
    assert np.mean(np.abs(a - b)) < 2


def test_context_crop_stays_inside_small_images() -> None:
    image = np.full((100, 80, 3), 7, np.uint8)
    crop = context_crop(image, np.array([30, 30, 60, 70]), 2.7, 128)
    assert crop.shape == (128, 128, 3)
    assert (crop == 7).all()
    with pytest.raises(ValueError, match="no area"):
        context_crop(image, np.array([10, 10, 10, 20]), 2.7, 128)
