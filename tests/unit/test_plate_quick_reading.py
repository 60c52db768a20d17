"""The reader's quick reading, look-alike confidences, padding and ``full_image``, with a
scripted recogniser backend and a stub detector (no models)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import cv2
import numpy as np
import pytest

from recognizer.models.manifest import ModelManifest
from recognizer.plates.reader import (
    PlateDetections,
    PlateDetector,
    PlateReader,
    PlateRecognizer,
    _resize_long_side,
)
from smartgate.errors import InvalidInputError

CHARACTERS = ["皖", "A", "B", "Z", "O", "0", "I", "1", "2", "3", "4", "5", "6", "7", "J", "·", "第"]
N_CLASSES = len(CHARACTERS) + 2  # blank + characters + space
Step = Mapping[str, float]


def _manifest() -> ModelManifest:
    return ModelManifest.from_dict(
        {
            "name": "plate-rec",
            "role": "plate_recognizer",
            "file": "model.onnx",
            "sha256": "ab" * 32,
            "source": None,
            "licence": "test",
            "input": {"name": "x", "size": [48, None], "mean": [127.5] * 3, "std": [127.5] * 3},
            "outputs": ["probs"],
            "extra": {"characters": CHARACTERS},
        }
    )


def line(text: str, conf: float = 0.999, **low: tuple[float, str, float]) -> list[Step]:
    """Steps spelling ``text`` (each character then a blank); ``low`` maps a position
    (``p3``) to (its probability, a rival character, the rival's probability)."""
    steps: list[Step] = []
    for i, ch in enumerate(text):
        if f"p{i}" in low:
            p, rival, q = low[f"p{i}"]
            steps.append({ch: p, rival: q})
        else:
            steps.append({ch: conf})
        steps.append({})
    return steps


class ScriptedBackend:
    """Returns scripted per-step probabilities, one script per line, in call order; records
    each call's input width and whether the lines were bright (taken from a light image)."""

    input_names = ("x",)
    output_names = ("probs",)

    def __init__(self, *scripts: Sequence[Step]) -> None:
        self.scripts = list(scripts)
        self.widths: list[int] = []
        self.batches: list[int] = []
        self.bright: list[bool] = []

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        blob = feeds["x"]
        n, _, _, width = blob.shape
        self.widths.append(width)
        self.batches.append(n)
        self.bright.append(bool(blob[:, :, :, :8].mean() > 0.5))
        steps = width // 8
        probs = np.zeros((n, steps, N_CLASSES), np.float32)
        probs[:, :, 0] = 1.0
        for row in range(n):
            script = self.scripts.pop(0) if self.scripts else []
            assert len(script) <= steps, "script longer than the line"
            for t, step in enumerate(script):
                if not step:
                    continue
                probs[row, t, :] = 0.0
                for ch, p in step.items():
                    probs[row, t, 1 + CHARACTERS.index(ch)] = p
                probs[row, t, 0] = max(0.0, 1.0 - sum(step.values()))
        return {"probs": probs}

    def close(self) -> None:
        pass


class StubDetector(PlateDetector):
    """Finds one plate with the given corners (in the pixels of the image it is given)."""

    def __init__(self, corners: np.ndarray) -> None:
        self.corners = np.asarray(corners, np.float32)
        self.seen: list[tuple[int, ...]] = []

    def warm_up(self) -> None:
        pass

    def detect(self, image: np.ndarray, image_scale: float = 1.0) -> PlateDetections:
        self.seen.append(image.shape)
        c = self.corners
        box = np.concatenate([c.min(0), c.max(0)])[None]
        return PlateDetections(box, np.array([0.99], np.float32), c[None])


QUICK_WIDTH = 192  # the tests' quick reading pads to this (the default: the line's own width)


def _reader(backend: ScriptedBackend, corners: np.ndarray, **options: object) -> PlateReader:
    rec = PlateRecognizer(backend, _manifest())
    options.setdefault("quick_width", QUICK_WIDTH)
    return PlateReader(StubDetector(corners), rec, **options)  # type: ignore[arg-type]


# A 150 x 48 plate (single row, aspect 3.1) and a 100 x 48 one (aspect 2.1: may be 2-row).
WIDE = np.array([[20, 10], [170, 10], [170, 58], [20, 58]], np.float32)
NARROW = np.array([[20, 10], [120, 10], [120, 58], [20, 58]], np.float32)
FRAME = np.full((80, 200, 3), 40, np.uint8)


def test_recognize_pads_to_min_width_or_the_override() -> None:
    backend = ScriptedBackend()
    rec = PlateRecognizer(backend, _manifest())
    plate = np.zeros((48, 100, 3), np.uint8)
    rec.recognize([plate])
    rec.recognize([plate], min_width=0)
    rec.recognize([plate], min_width=192)
    rec.recognize([plate, np.zeros((48, 400, 3), np.uint8)], min_width=0)
    assert backend.widths == [320, 100, 192, 320]


def test_lookalikes_are_merged_in_their_own_confidences() -> None:
    backend = ScriptedBackend(line("皖AZ5O6J", p4=(0.6, "0", 0.35)))
    (reading,) = PlateRecognizer(backend, _manifest()).recognize([np.zeros((48, 150, 3), np.uint8)])
    assert reading.text == "皖AZ5O6J"
    assert reading.confidences[4] == pytest.approx(0.6)
    assert reading.merged_confidences is not None
    assert reading.merged_confidences[4] == pytest.approx(0.95)
    np.testing.assert_allclose(np.delete(reading.merged_confidences, 4), 0.999, rtol=1e-6)


def test_characters_outside_the_alphabet_are_skipped_but_keep_their_probability() -> None:
    backend = ScriptedBackend(line("皖AZ5", p2=(0.3, "第", 0.6)))
    (reading,) = PlateRecognizer(backend, _manifest()).recognize([np.zeros((48, 150, 3), np.uint8)])
    assert reading.text == "皖AZ5"
    assert reading.confidences[2] == pytest.approx(0.3)
    full = PlateRecognizer(
        ScriptedBackend(line("皖AZ5", p2=(0.3, "第", 0.6))), _manifest(), alphabet=None
    )
    assert full.recognize([np.zeros((48, 150, 3), np.uint8)])[0].text == "皖A第5"


def test_a_confident_quick_reading_is_kept() -> None:
    backend = ScriptedBackend(line("皖A·Z576J"))
    (r,) = _reader(backend, WIDE).read_frame(FRAME)
    assert (r.text, r.valid, r.double_row) == ("皖AZ576J", True, False)
    assert backend.widths == [QUICK_WIDTH]  # one run, not padded to 320


def test_the_quick_reading_is_at_the_lines_own_width_by_default() -> None:
    backend = ScriptedBackend(line("皖A·Z576J"))
    rec = PlateRecognizer(backend, _manifest())
    (r,) = PlateReader(StubDetector(WIDE), rec).read_frame(FRAME)
    assert r.text == "皖AZ576J" and backend.widths == [150]


def test_a_doubtful_quick_reading_is_read_again_padded() -> None:
    backend = ScriptedBackend(line("皖AZ576J", p3=(0.9, "2", 0.05)), line("皖AZ576J"))
    (r,) = _reader(backend, WIDE).read_frame(FRAME)
    assert r.text == "皖AZ576J" and r.score == pytest.approx(0.999, abs=1e-4)
    assert backend.widths == [QUICK_WIDTH, 320]


def test_an_invalid_quick_reading_is_read_again() -> None:
    backend = ScriptedBackend(line("皖AZ576"), line("皖AZ576J"))
    (r,) = _reader(backend, WIDE).read_frame(FRAME)
    assert r.text == "皖AZ576J" and backend.widths == [QUICK_WIDTH, 320]


def test_a_serial_lookalike_does_not_make_the_quick_reading_doubtful() -> None:
    backend = ScriptedBackend(line("皖AZ5O6J", p4=(0.6, "0", 0.39)))
    (r,) = _reader(backend, WIDE).read_frame(FRAME)
    assert r.text == "皖AZ506J" and backend.widths == [QUICK_WIDTH]
    assert r.char_confidences[4] == pytest.approx(0.6)  # the reading's own score is unchanged


def test_the_authority_letter_gets_no_lookalike_help() -> None:
    """``O`` is a letter in the second place: a 0.6 ``O`` there stays doubtful."""
    backend = ScriptedBackend(line("皖O12345", p1=(0.6, "0", 0.39)), line("皖O12345"))
    (r,) = _reader(backend, WIDE).read_frame(FRAME)
    assert r.text == "皖O12345" and backend.widths == [QUICK_WIDTH, 320]


def test_the_double_row_reading_only_follows_a_doubtful_quick_reading() -> None:
    settled = ScriptedBackend(line("皖A·Z576J"))
    (r,) = _reader(settled, NARROW).read_frame(FRAME)
    assert r.text == "皖AZ576J" and settled.batches == [1]
    # Not settled: the single row and both rows of the double-row layout, in one batch.
    doubtful = ScriptedBackend(line("皖AZ5"), line("皖AZ5"), line("皖A"), line("Z576J"))
    (r,) = _reader(doubtful, NARROW).read_frame(FRAME)
    assert doubtful.batches == [1, 3] and doubtful.widths[1] >= 320
    assert (r.text, r.double_row) == ("皖AZ576J", True)


def test_quick_reading_off_always_pads() -> None:
    backend = ScriptedBackend(line("皖A·Z576J"))
    (r,) = _reader(backend, WIDE, quick_accept=None).read_frame(FRAME)
    assert r.text == "皖AZ576J" and backend.widths == [320]


def test_read_crop_uses_the_quick_reading_too() -> None:
    backend = ScriptedBackend(line("皖A·Z576J"))
    r = _reader(backend, WIDE).read_crop(np.full((24, 94, 3), 60, np.uint8))
    assert r.text == "皖AZ576J" and backend.widths == [QUICK_WIDTH]


def test_full_image_gives_the_pixels_and_corners_are_in_original_pixels() -> None:
    full = np.full((160, 400, 3), 250, np.uint8)  # bright: the plate is read from here
    half = cv2.resize(np.zeros_like(full), (200, 80))  # dark reduced decode
    backend = ScriptedBackend(line("皖A·Z576J"))
    reader = _reader(backend, WIDE)
    (r,) = reader.read_frame(half, 0.5, full_image=full)
    assert backend.bright == [True]
    assert reader.detector.seen == [half.shape]  # type: ignore[attr-defined]
    np.testing.assert_allclose(r.corners, (WIDE + 0.5) / 0.5 - 0.5)
    # Without full_image the same corners come back, the pixels from the reduced image.
    backend.scripts = [line("皖A·Z576J")]
    (again,) = reader.read_frame(half, 0.5)
    assert backend.bright == [True, False]
    np.testing.assert_allclose(again.corners, r.corners)


@pytest.mark.parametrize("size", [(160, 401), (159, 400), (320, 800)])
def test_a_full_image_of_another_size_is_refused(size: tuple[int, int]) -> None:
    reader = _reader(ScriptedBackend(), WIDE)
    half = np.zeros((80, 200, 3), np.uint8)
    full = np.zeros((*size, 3), np.uint8)
    if size == (320, 800):
        with pytest.raises(InvalidInputError, match="full_image"):
            reader.read_frame(half, 0.5, full_image=full)
    else:  # a pixel of rounding is fine (decoders round scaled sizes up)
        reader._read = lambda candidates: []  # type: ignore[method-assign]
        assert reader.read_frame(half, 0.5, full_image=full) == []


@pytest.mark.parametrize("scale", [0.0, -1.0, float("nan"), float("inf")])
def test_image_scale_must_be_positive(scale: float) -> None:
    with pytest.raises(InvalidInputError, match="image_scale"):
        _reader(ScriptedBackend(), WIDE).read_frame(FRAME, scale)


def test_resize_is_bilinear_down_to_half_and_area_averaged_below() -> None:
    image = np.random.default_rng(0).integers(0, 256, (720, 1160, 3), dtype=np.uint8)
    resized, factor = _resize_long_side(image, 640)  # factor 0.55: bilinear
    expected = cv2.resize(image, (640, 397), interpolation=cv2.INTER_LINEAR)
    assert factor == pytest.approx(640 / 1160) and np.array_equal(resized, expected)
    resized, factor = _resize_long_side(image, 320)  # factor 0.28: area averaging
    expected = cv2.resize(image, (320, 199), interpolation=cv2.INTER_AREA)
    assert factor == pytest.approx(320 / 1160) and np.array_equal(resized, expected)
    always_area, _ = _resize_long_side(image, 640, linear_min_factor=2.0)
    expected = cv2.resize(image, (640, 397), interpolation=cv2.INTER_AREA)
    assert np.array_equal(always_area, expected)
    untouched, one = _resize_long_side(image[:300, :600], 640)
    assert one == 1.0 and untouched.shape == (300, 600, 3)
