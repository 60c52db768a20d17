"""The face pipeline on real photos: detection, landmarks, scale invariance, quality."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from recognizer.image import DecodeLimits, decode

pytestmark = pytest.mark.integration
LIMITS = DecodeLimits()


def _analyze(analyzer, path: Path):  # type: ignore[no-untyped-def]
    return analyzer.analyze(decode(path.read_bytes(), LIMITS, 640), embed_all=True)


@pytest.mark.parametrize(
    ("name", "at_least"),
    [
        ("examples_obama.jpg", 1),
        ("examples_two_people.jpg", 2),
        ("examples_knn_examples_test_obama_and_biden.jpg", 2),
        ("tests_test_images_32bit.png", 1),
    ],
)
def test_faces_are_found_with_landmarks_inside_their_boxes(  # type: ignore[no-untyped-def]
    face_analyzer, faces_dir: Path, name: str, at_least: int
) -> None:
    faces = _analyze(face_analyzer, faces_dir / name)
    assert len(faces) >= at_least
    for f in faces[:at_least]:
        x1, y1, x2, y2 = f.box
        assert f.score >= 0.8
        assert (f.landmarks[:, 0] >= x1 - 5).all() and (f.landmarks[:, 0] <= x2 + 5).all()
        assert (f.landmarks[:, 1] >= y1 - 5).all() and (f.landmarks[:, 1] <= y2 + 5).all()
        assert f.landmarks[0, 0] < f.landmarks[1, 0]  # left eye left of right eye
        assert f.embedding is not None
        assert np.linalg.norm(f.embedding) == pytest.approx(1.0, abs=1e-4)


def test_boxes_are_in_original_pixels_at_every_resolution(face_analyzer, faces_dir: Path) -> None:  # type: ignore[no-untyped-def]
    """The same frame at 1080p (half-scale decode) and 720p gives the same face, scaled."""
    hd = _analyze(face_analyzer, faces_dir / "examples_obama-1080p.jpg")[0]
    sd = _analyze(face_analyzer, faces_dir / "examples_obama-720p.jpg")[0]
    np.testing.assert_allclose(hd.box / 1.5, sd.box, atol=6)
    np.testing.assert_allclose(hd.landmarks / 1.5, sd.landmarks, atol=4)
    assert float(hd.embedding @ sd.embedding) > 0.9  # type: ignore[operator]


def test_blank_and_blurred_frames(face_analyzer, faces_dir: Path) -> None:  # type: ignore[no-untyped-def]
    _, blank = cv2.imencode(".jpg", np.full((720, 1280, 3), 128, np.uint8))
    assert face_analyzer.analyze(decode(blank.tobytes(), LIMITS, 640)) == []
    img = cv2.imread(str(faces_dir / "examples_obama.jpg"))
    _ok, blurred = cv2.imencode(".jpg", cv2.GaussianBlur(img, (0, 0), 12))
    faces = face_analyzer.analyze(decode(blurred.tobytes(), LIMITS, 640), embed_all=True)
    assert faces, "a blurred face is still detected"
    assert "blurred" in faces[0].quality.reasons


def test_tiny_faces_are_marked_too_small(face_analyzer, faces_dir: Path) -> None:  # type: ignore[no-untyped-def]
    img = cv2.imread(str(faces_dir / "examples_obama.jpg"))
    canvas = np.full((480, 640, 3), 120, np.uint8)  # detected at full scale
    canvas[200:325, 300:400] = cv2.resize(img, (100, 125), interpolation=cv2.INTER_AREA)
    _ok, buf = cv2.imencode(".jpg", canvas, [cv2.IMWRITE_JPEG_QUALITY, 95])
    faces = face_analyzer.analyze(decode(buf.tobytes(), LIMITS, 640), embed_all=True)
    assert faces and "too_small" in faces[0].quality.reasons
    assert faces[0].box[0] > 300 and faces[0].box[2] < 400
