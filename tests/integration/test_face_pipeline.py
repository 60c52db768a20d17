"""The face pipeline on real photos: detection, landmarks, scale invariance, quality."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from recognizer.image import DecodeLimits, decode
from smartgate.config import TrackingConfig

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


@pytest.mark.parametrize(("width", "height"), [(1920, 1080), (1280, 720)])
def test_a_region_search_finds_the_faces_a_whole_frame_search_finds(  # type: ignore[no-untyped-def]
    face_analyzer, faces_dir: Path, width: int, height: int
) -> None:
    """``FaceDetector.detect(region=...)`` around last frame's face finds the face the whole
    frame search finds, from a fraction of the pixels; boxes and landmarks agree up to the
    detector's own noise: the embeddings of the two alignments differ no more than those of
    the same scene shifted by one pixel (cosine median 0.986, p10 0.970 over 98 such pairs of
    the shared photos; region vs whole with the default margin: median 0.990, p10 0.971)."""
    from benchmarks.scenes import composite
    from recognizer.faces.align import align_face
    from recognizer.faces.carry import CarryLedger, CarryOffer, CarryPolicy, View, detection_region

    detector, embedder = face_analyzer.detector, face_analyzer.embedder
    policy = CarryPolicy(region_margin=TrackingConfig().carry_region_margin)
    photo = cv2.imread(str(faces_dir / "examples_obama2.jpg"))
    subject = cv2.resize(photo, (int(photo.shape[1] * 0.5 * height / photo.shape[0]), height // 2))
    previous = None
    cosines = []
    for k, x in enumerate(range(width // 5, width // 2, width // 23)):
        frame = composite(subject, width, height, x, height // 4 + 7 * k)
        image = decode(cv2.imencode(".jpg", frame)[1].tobytes(), LIMITS, 640)
        whole = detector.detect(image.scaled, image.scale)
        assert len(whole) == 1
        if previous is not None:
            view = View(previous[None], 0.0, np.array([previous[3] - previous[1]]))
            offer = CarryOffer([], 0.0, policy, CarryLedger(3), view, region=True)
            h, w = image.scaled.shape[:2]
            region = detection_region(offer, w, h, image.scale)
            assert region is not None
            assert (region[2] - region[0]) * (region[3] - region[1]) < 0.25 * w * h
            found = detector.detect(image.scaled, image.scale, region)
            assert len(found) == 1
            face_width = float(whole.boxes[0, 2] - whole.boxes[0, 0])
            np.testing.assert_allclose(found.boxes, whole.boxes, atol=0.08 * face_width)
            np.testing.assert_allclose(found.landmarks, whole.landmarks, atol=0.08 * face_width)
            crops = np.stack(
                [
                    align_face(image.full(), d.landmarks[0], embedder.input_size, 1.0)
                    for d in (whole, found)
                ]
            )
            a, b = embedder.embed(crops)
            cosines.append(float(a @ b))
        previous = whole.boxes[0]
    assert len(cosines) >= 3
    assert min(cosines) >= 0.9 and float(np.median(cosines)) >= 0.98, cosines


def test_the_full_resolution_is_wanted_for_faces_the_gate_saw_small(face_analyzer) -> None:  # type: ignore[no-untyped-def]
    from recognizer.faces.carry import CarryLedger, CarryOffer, CarryPolicy, View

    def offer(*sizes: float) -> CarryOffer:
        view = View(np.zeros((len(sizes), 4)), 0.0, np.array(sizes, dtype=np.float64))
        return CarryOffer([], 0.0, CarryPolicy(), CarryLedger(3), view)

    # Aligned from the full resolution below 0.6 of the 112-pixel crop at the decoded scale.
    assert face_analyzer.wants_full_resolution(offer(120.0), 0.5)  # 60 px at half scale
    assert face_analyzer.wants_full_resolution(offer(300.0, 120.0), 0.5)
    assert not face_analyzer.wants_full_resolution(offer(140.0), 0.5)
    assert not face_analyzer.wants_full_resolution(offer(120.0), 1.0)
    assert not face_analyzer.wants_full_resolution(offer(), 0.5)
    assert not face_analyzer.wants_full_resolution(None, 0.5)
