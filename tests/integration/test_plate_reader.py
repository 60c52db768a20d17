"""The plate reader with the real models on real photos and on synthetic plates."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from synth_plates import (
    CASES,
    SynthCase,
    place_in_scene,
    render_plate,
)

from benchmarks.plate_accuracy import (
    LabelledScene,
    box_iou,
    crop_labels,
    evaluate_crops,
    evaluate_crops_in_frames,
    read_image,
    scene_labels,
)
from recognizer.plates.color import PlateColor
from recognizer.plates.reader import INVALID_SCORE_FACTOR, PlateReader, PlateRecognizer
from recognizer.plates.text import PlateFormat, normalize
from smartgate.errors import InvalidInputError

pytestmark = pytest.mark.integration
needs_font = pytest.mark.usefixtures("cjk_font")

# Measured: 494 of 500 (98.8 %) with the default reader.
CROP_ACCURACY_FLOOR = 0.985
# The same crops pasted into frames at a plate's aspect, read with read_frame. Measured: 494
# of 500 with the default (quick) reader, 493 always padding to 320.
FRAMED_ACCURACY_FLOOR = 0.98
# Measured: corners within 9.1 px of the labels (mean 4.4) on 720 x 1160 scenes.
CORNER_TOLERANCE_PX = 12.0


@pytest.fixture(scope="module")
def reader(models_dir: Path) -> PlateReader:
    from recognizer.plates.factory import build_plate_reader

    return build_plate_reader(models_dir)  # a missing model fails, naming the fix


@pytest.fixture(scope="module")
def plates(shared_data: Path) -> Path:
    return shared_data / "plates"


def test_real_crops_accuracy(reader: PlateReader, shared_data: Path) -> None:
    report = evaluate_crops(reader, shared_data)
    assert report.total == 500
    assert report.accuracy >= CROP_ACCURACY_FLOOR, "\n".join(report.failures)
    assert report.char_accuracy >= 0.995


def test_real_plates_in_frames_accuracy(reader: PlateReader, shared_data: Path) -> None:
    report = evaluate_crops_in_frames(reader, shared_data)
    assert report.total == 500
    assert report.accuracy >= FRAMED_ACCURACY_FLOOR, "\n".join(report.failures)


def test_confident_crop_readings_are_right(reader: PlateReader, shared_data: Path) -> None:
    """A valid reading scoring >= 0.99 was never wrong on the real crops (measured)."""
    folder = shared_data / "plates" / "crops"
    wrong = []
    for label in crop_labels(shared_data)[:200]:
        reading = reader.read_crop(read_image(folder / label.file))
        if reading.valid and reading.score >= 0.99 and reading.text != label.plate:
            wrong.append((label.file, label.plate, reading.text, reading.score))
    assert wrong == []


@pytest.mark.parametrize("quick", [True, False], ids=["quick", "always-320"])
@pytest.mark.parametrize("index", range(6))
def test_every_scene_is_read_exactly(
    reader: PlateReader, plates: Path, index: int, quick: bool
) -> None:
    if not quick:
        reader = PlateReader(reader.detector, reader.recognizer, quick_accept=None)
    label: LabelledScene = scene_labels(plates.parent)[index]
    readings = reader.read_frame(read_image(plates / "scenes" / label.file))
    assert len(readings) == 1
    r = readings[0]
    assert r.text == label.plate
    # As read: the quick reading may say ``O`` for a serial ``0`` (normalised away).
    assert normalize(r.raw_text) == label.plate
    assert r.format is PlateFormat.STANDARD and r.valid and r.reason is None
    assert r.color is PlateColor.BLUE
    assert r.score >= 0.9 and r.detection_score is not None and r.detection_score >= 0.9
    assert r.char_confidences.shape == (7,)
    assert not r.double_row
    errors = np.linalg.norm(r.corners - label.ordered, axis=1)
    assert errors.max() <= CORNER_TOLERANCE_PX, errors
    truth_box = np.concatenate([label.corners.min(0), label.corners.max(0)])
    assert box_iou(r.box, truth_box) >= 0.8


def test_corners_come_back_in_original_pixels(reader: PlateReader, plates: Path) -> None:
    """A frame decoded at half size (image_scale 0.5) reports full-size coordinates."""
    label = scene_labels(plates.parent)[2]
    full = read_image(plates / "scenes" / label.file)
    half = cv2.resize(full, (full.shape[1] // 2, full.shape[0] // 2), interpolation=cv2.INTER_AREA)
    (r,) = reader.read_frame(half, image_scale=0.5)
    assert r.text == label.plate
    assert np.linalg.norm(r.corners - label.ordered, axis=1).max() <= 2 * CORNER_TOLERANCE_PX


@pytest.mark.parametrize("index", range(6))
def test_reduced_decode_with_full_image(reader: PlateReader, plates: Path, index: int) -> None:
    """Detection on a half-size decode, rectification from the full frame."""
    label = scene_labels(plates.parent)[index]
    full = read_image(plates / "scenes" / label.file)
    half = cv2.resize(full, (full.shape[1] // 2, full.shape[0] // 2), interpolation=cv2.INTER_AREA)
    (r,) = reader.read_frame(half, image_scale=0.5, full_image=full)
    assert r.text == label.plate and r.valid
    assert np.linalg.norm(r.corners - label.ordered, axis=1).max() <= 2 * CORNER_TOLERANCE_PX
    with pytest.raises(InvalidInputError, match="full_image"):
        reader.read_frame(half, image_scale=0.25, full_image=full)


def test_frames_without_plates(reader: PlateReader, shared_data: Path) -> None:
    rng = np.random.default_rng(3)
    frames = [
        np.full((720, 1280, 3), 128, np.uint8),
        np.zeros((480, 640, 3), np.uint8),
        rng.integers(0, 256, (600, 800, 3), dtype=np.uint8),
        read_image(shared_data / "faces" / "examples_obama.jpg"),
        read_image(shared_data / "faces" / "examples_two_people.jpg"),
        np.full((40, 30, 3), 200, np.uint8),  # smaller than any anchor
    ]
    for frame in frames:
        assert reader.read_frame(frame) == []


def test_unlabelled_scenes_sanity(reader: PlateReader, plates: Path) -> None:
    """Detection sanity check: 23 of 25 photos give a plate at long side 640 (measured)."""
    files = sorted((plates / "unlabelled").glob("*.jpg"))
    assert len(files) == 25
    with_plates = 0
    for path in files:
        readings = reader.read_frame(read_image(path))
        with_plates += bool(readings)
        if path.name.startswith("ccpd_"):  # CCPD samples: one blue Anhui plate each
            assert [(r.valid, r.color, r.text[0]) for r in readings] == [
                (True, PlateColor.BLUE, "皖")
            ], path.name
    assert with_plates >= 23


def test_tiny_and_non_plate_crops_never_raise(reader: PlateReader, shared_data: Path) -> None:
    tiny = reader.read_crop(np.full((5, 20, 3), 90, np.uint8))
    assert tiny.score == 0.0 and not tiny.valid and "too small" in (tiny.reason or "")
    assert tiny.text == "" and tiny.color is PlateColor.UNKNOWN

    blank = reader.read_crop(np.full((24, 94, 3), 128, np.uint8))
    assert blank.score == 0.0 and blank.reason == (
        "no characters read; the detector found no plate in the crop"
    )

    face = read_image(shared_data / "faces" / "examples_obama.jpg")
    rng = np.random.default_rng(0)
    for crop in (face[100:160, 200:420], rng.integers(0, 256, (30, 120, 3), dtype=np.uint8)):
        reading = reader.read_crop(crop)
        assert reading.score < 0.5 or not reading.valid
        if not reading.valid:
            assert reading.reason

    grey = reader.read_crop(
        cv2.cvtColor(
            read_image(shared_data / "plates" / "crops" / "crop_000.jpg"), cv2.COLOR_BGR2GRAY
        )
    )
    assert grey.text == crop_labels(shared_data)[0].plate


def test_bad_inputs_raise_invalid_input(reader: PlateReader) -> None:
    with pytest.raises(InvalidInputError, match="uint8"):
        reader.read_crop(np.zeros((24, 94, 3), np.float32))
    with pytest.raises(InvalidInputError, match="expected"):
        reader.read_frame(np.zeros((24, 94, 2), np.uint8))


def test_recogniser_classes_line_up_with_the_manifest(reader: PlateReader, plates: Path) -> None:
    """Class i is characters[i - 1]: the manifest's list read with that offset gives the
    province characters of the CCPD crops (an off-by-one would give neighbouring entries)."""
    rec = reader.recognizer
    assert rec.characters[0] == "'" and len(rec.characters) == 6623
    crop = read_image(plates / "crops" / "crop_001.jpg")
    (line,) = rec.recognize([crop])
    assert line.text.replace("·", "") == "沪AMS087"
    assert line.confidences.shape == (len(line.text),)
    assert (line.confidences > 0.5).all()


def test_full_vocabulary_decoding_still_reads_plates(reader: PlateReader, plates: Path) -> None:
    rec = reader.recognizer
    full = PlateRecognizer(rec.backend, rec.manifest, alphabet=None)
    crop = read_image(plates / "crops" / "crop_002.jpg")
    assert full.recognize([crop])[0].text.replace("·", "") == "沪C8GK31"


@needs_font
@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_synthetic_crops_give_colour_format_and_text(reader: PlateReader, case: SynthCase) -> None:
    for scale in (0.25, 0.5):
        reading = reader.read_crop(render_plate(case, scale))
        assert reading.color is PlateColor(case.color), scale
        assert reading.format is PlateFormat(case.format), (scale, reading.text)
        assert reading.text == case.text, scale
        assert reading.double_row == case.double_row
        assert reading.score >= 0.8


@needs_font
@pytest.mark.parametrize("index", [0, 3, 12], ids=[CASES[i].id for i in (0, 3, 12)])
def test_synthetic_plates_found_in_a_frame(reader: PlateReader, index: int) -> None:
    """The detector (trained on real photos) finds blue, green and double-row yellow renders
    pasted into a textured scene; yellow single-row, white and black renders it misses."""
    case = CASES[index]
    scene, corners = place_in_scene(render_plate(case, 0.5), plate_width=200, tilt_deg=5.0, seed=1)
    readings = reader.read_frame(scene)
    assert len(readings) == 1
    r = readings[0]
    assert (r.text, r.color, r.format) == (
        case.text,
        PlateColor(case.color),
        PlateFormat(case.format),
    )
    assert r.double_row == case.double_row
    assert np.linalg.norm(r.corners - corners, axis=1).max() <= 15.0


@needs_font
def test_invalid_text_is_returned_as_read_never_corrected(reader: PlateReader) -> None:
    """Six characters (a plate with one missing) stay six, flagged with a low score."""
    reading = reader.read_crop(render_plate(SynthCase("皖A2158", "blue", "standard"), 0.4))
    assert reading.text == "皖A2158"
    assert reading.format is None and not reading.valid
    assert 0 < reading.score <= INVALID_SCORE_FACTOR
    assert "fits no mainland plate format" in (reading.reason or "")


@needs_font
def test_new_energy_serial_rules_are_enforced(reader: PlateReader) -> None:
    """浙AF0J368 is 8 characters on a green plate but breaks the D/F rules: kept, invalid."""
    reading = reader.read_crop(render_plate(SynthCase("浙AF0J368", "green", "new_energy"), 0.4))
    assert reading.text == "浙AF0J368"
    assert reading.color is PlateColor.GREEN
    assert reading.format is None and reading.score <= INVALID_SCORE_FACTOR
