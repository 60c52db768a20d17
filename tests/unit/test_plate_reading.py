"""Plate reader value types and the recogniser's class table, without models."""

from __future__ import annotations

import numpy as np
import pytest

from recognizer.plates.color import PlateColor
from recognizer.plates.reader import (
    BOTTOM_ROW,
    TOP_ROW,
    LineReading,
    PlateDetections,
    PlateReading,
    _split_rows,
)
from recognizer.plates.text import PlateFormat

CORNERS = np.array([[0, 0], [94, 0], [94, 24], [0, 24]], np.float32)
BOX = np.array([0, 0, 94, 24], np.float32)


def _reading(**changes: object) -> PlateReading:
    fields: dict[str, object] = {
        "text": "皖AZ576J",
        "raw_text": "皖A·Z576J",
        "score": 0.99,
        "color": PlateColor.BLUE,
        "format": PlateFormat.STANDARD,
        "corners": CORNERS,
        "box": BOX,
    }
    fields.update(changes)
    return PlateReading(**fields)  # type: ignore[arg-type]


def test_a_valid_reading() -> None:
    r = _reading()
    assert r.valid and r.reason is None and r.detection_score is None
    assert r.char_confidences.shape == (0,)


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        ({"corners": CORNERS[:3]}, r"corners: expected shape \(4, 2\), got \(3, 2\)"),
        ({"box": BOX[:2]}, r"box: expected shape \(4,\), got \(2,\)"),
        ({"score": 1.5}, r"score: expected a value in \[0, 1\]"),
        ({"score": -0.1}, r"score: expected a value in \[0, 1\]"),
        ({"format": None}, "must say why"),
    ],
)
def test_reading_validation(changes: dict[str, object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        _reading(**changes)


def test_an_invalid_reading_carries_its_reason() -> None:
    r = _reading(text="皖AZ576", format=None, score=0.2, reason="six characters")
    assert not r.valid and r.reason == "six characters"


def test_detections_validation() -> None:
    ok = PlateDetections(np.zeros((2, 4)), np.zeros(2), np.zeros((2, 4, 2)))
    assert len(ok) == 2
    assert len(PlateDetections(np.zeros((0, 4)), np.zeros(0), np.zeros((0, 4, 2)))) == 0
    with pytest.raises(ValueError, match=r"boxes: expected shape \(2, 4\)"):
        PlateDetections(np.zeros((3, 4)), np.zeros(2), np.zeros((2, 4, 2)))
    with pytest.raises(ValueError, match=r"corners: expected shape \(2, 4, 2\)"):
        PlateDetections(np.zeros((2, 4)), np.zeros(2), np.zeros((2, 5, 2)))
    with pytest.raises(ValueError, match=r"scores: expected shape \(n,\)"):
        PlateDetections(np.zeros((2, 4)), np.zeros((2, 1)), np.zeros((2, 4, 2)))


def test_line_reading_needs_one_confidence_per_character() -> None:
    assert LineReading("皖A", np.ones(2, np.float32)).text == "皖A"
    with pytest.raises(ValueError, match=r"confidences: expected shape \(2,\)"):
        LineReading("皖A", np.ones(3, np.float32))
    assert LineReading("皖A", np.ones(2, np.float32)).merged_confidences is None
    with pytest.raises(ValueError, match=r"merged_confidences: expected shape \(2,\)"):
        LineReading("皖A", np.ones(2, np.float32), np.ones(1, np.float32))


@pytest.mark.parametrize("height", [3, 48, 144, 145])
def test_double_row_split(height: int) -> None:
    plate = np.arange(height, dtype=np.uint8)[:, None, None].repeat(10, axis=1).repeat(3, axis=2)
    top, bottom = _split_rows(plate)
    assert top.shape[0] >= 1 and bottom.shape[0] >= 1
    assert top[0, 0, 0] == 0 and bottom[-1, 0, 0] == height - 1
    # The rows overlap a little and cover the plate between them.
    assert top.shape[0] + bottom.shape[0] >= height
    assert TOP_ROW[1] > BOTTOM_ROW[0]
