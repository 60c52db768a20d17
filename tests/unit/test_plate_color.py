"""Plate colour on synthetic plates of every colour and on the real (all blue) crops."""

from __future__ import annotations

import csv
from pathlib import Path

import cv2
import numpy as np
import pytest
from synth_plates import CASES, SynthCase, render_plate

from recognizer.plates.color import PlateColor, color_evidence, plate_color

needs_font = pytest.mark.usefixtures("cjk_font")


def _lit(image: np.ndarray, gain: float, cast: tuple[float, float, float]) -> np.ndarray:
    """Brightness ``gain`` and a per-channel (B, G, R) colour cast."""
    out = image.astype(np.float32) * gain * np.array(cast, dtype=np.float32)
    return np.clip(out, 0, 255).astype(np.uint8)


def _noisy(image: np.ndarray, seed: int) -> np.ndarray:
    noise = np.random.default_rng(seed).normal(0, 6, image.shape)
    blurred = cv2.GaussianBlur(image, (3, 3), 0).astype(np.float64)
    return np.clip(blurred + noise, 0, 255).astype(np.uint8)


@needs_font
@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
@pytest.mark.parametrize("scale", [0.2, 0.35, 0.6])
@pytest.mark.parametrize(
    ("gain", "cast"),
    [
        (1.0, (1.0, 1.0, 1.0)),
        (0.6, (1.0, 1.0, 1.0)),
        (1.15, (1.0, 1.0, 1.0)),
        (0.9, (0.9, 1.0, 1.1)),
    ],
    ids=["plain", "dim", "bright", "warm"],
)
def test_synthetic_plates_of_every_colour(
    case: SynthCase, scale: float, gain: float, cast: tuple[float, float, float]
) -> None:
    plate = _noisy(_lit(render_plate(case, scale), gain, cast), seed=int(scale * 100))
    assert plate_color(plate) == PlateColor(case.color)


@needs_font
def test_light_characters_are_seen_as_light() -> None:
    blue = color_evidence(render_plate(CASES[0], 0.3))
    yellow = color_evidence(render_plate(CASES[2], 0.3))
    assert blue is not None and blue.light_text
    assert yellow is not None and not yellow.light_text


@pytest.mark.parametrize(
    "crop",
    [
        np.zeros((0, 0, 3), np.uint8),
        np.zeros((1, 40, 3), np.uint8),
        np.full((24, 94, 3), 128, np.uint8),  # a single tone
    ],
)
def test_empty_and_flat_crops_are_unknown(crop: np.ndarray) -> None:
    assert plate_color(crop) == PlateColor.UNKNOWN


def test_bad_crops_raise() -> None:
    with pytest.raises(ValueError, match="uint8"):
        plate_color(np.zeros((24, 94), np.uint8))
    with pytest.raises(ValueError, match="uint8"):
        plate_color(np.zeros((24, 94, 3), np.float32))


def test_every_real_crop_is_blue(shared_data: Path) -> None:
    """All 500 crops in plates/crops are blue plates (many at night or over-exposed)."""
    crops = shared_data / "plates" / "crops"
    with (crops / "labels.csv").open(encoding="utf-8") as fh:
        files = [row["file"] for row in csv.DictReader(fh)]
    assert len(files) == 500
    wrong = []
    for name in files:
        image = cv2.imread(str(crops / name))
        assert image is not None, name
        color = plate_color(image)
        if color != PlateColor.BLUE:
            wrong.append((name, color.value))
    assert wrong == []
